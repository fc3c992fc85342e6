# The Chronicle image that compose.yaml runs: `chronicle api` (and `chronicle migrate`).
FROM python:3.12.12-slim
COPY --from=ghcr.io/astral-sh/uv:0.9.5 /uv /usr/local/bin/uv
WORKDIR /app
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_NO_DEV=1
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-install-project
COPY src ./src
RUN uv sync --frozen
ENV PATH="/app/.venv/bin:$PATH" CHRONICLE_HOST=0.0.0.0
EXPOSE 8000
CMD ["chronicle", "api", "--workers", "2"]
