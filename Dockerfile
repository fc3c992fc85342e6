# The Chronicle image that compose.yaml runs: `chronicle api` (and `chronicle migrate`, `relay`,
# `projector`, `saga`). Only the project's own dependencies: --no-default-groups leaves out the dev
# tools and the embedded dev servers (the `devstack` group); compose.yaml provides real ones.
# It runs as an unprivileged user that owns nothing in the image; secrets come from the
# environment at run time (see compose.yaml), never from the build (see .dockerignore).
FROM python:3.12.12-slim
COPY --from=ghcr.io/astral-sh/uv:0.9.5 /uv /usr/local/bin/uv
WORKDIR /app
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-default-groups --no-install-project
COPY src ./src
RUN uv sync --frozen --no-default-groups
RUN groupadd --system --gid 10001 chronicle \
    && useradd --system --uid 10001 --gid chronicle --no-create-home --shell /usr/sbin/nologin chronicle
ENV PATH="/app/.venv/bin:$PATH" CHRONICLE_HOST=0.0.0.0 CHRONICLE_LOG_FORMAT=json
USER 10001:10001
EXPOSE 8000
# Healthy while the API answers HTTP at all (any status: /v1/health itself says which server is
# down, and restarting the API would not bring that server back).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import http.client, os; c = http.client.HTTPConnection('127.0.0.1', int(os.environ.get('CHRONICLE_PORT', '8000')), timeout=4); c.request('GET', '/v1/health'); c.getresponse()"]
CMD ["chronicle", "api", "--workers", "2"]
