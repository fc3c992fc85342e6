# The Chronicle image that compose.yaml runs: `chronicle api` (and `chronicle migrate`).
# Only the project's own dependencies: --no-default-groups leaves out the dev tools and the embedded
# dev servers (the `devstack` group); compose.yaml provides real ones.
FROM python:3.12.12-slim
COPY --from=ghcr.io/astral-sh/uv:0.9.5 /uv /usr/local/bin/uv
WORKDIR /app
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-default-groups --no-install-project
COPY src ./src
RUN uv sync --frozen --no-default-groups
ENV PATH="/app/.venv/bin:$PATH" CHRONICLE_HOST=0.0.0.0 CHRONICLE_LOG_FORMAT=json
EXPOSE 8000
CMD ["chronicle", "api", "--workers", "2"]
