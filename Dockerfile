# syntax=docker/dockerfile:1
# chroma-orch for production: the ecs runtime against an external PostgreSQL.
#   docker build -t chroma-orch .
#   docker run -p 8080:8080 -e CHROMA_ORCH_DATABASE_URL=postgresql+asyncpg://user:pass@db/chroma_orch \
#     -e CHROMA_ORCH_ECS__CLUSTER=... -e CHROMA_ORCH_ECS__SUBNETS='["subnet-..."]' chroma-orch

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY src ./src
COPY migrations ./migrations
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
RUN useradd --system --create-home --uid 10001 --shell /usr/sbin/nologin chroma-orch
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
WORKDIR /home/chroma-orch
ENV CHROMA_ORCH_HOST=0.0.0.0 \
    CHROMA_ORCH_PORT=8080 \
    CHROMA_ORCH_RUNTIME=ecs \
    CHROMA_ORCH_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["chroma-orch"]
CMD ["serve"]
