# tiergate: the gateway as a container. Mount a config at /etc/tiergate/config.yaml.
# The wheel is built in a stage with a C compiler (the classifier's kernel, tiers/classifier/_lean.c); the
# image that runs has none.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY tiers ./tiers
COPY routing ./routing
COPY budgets ./budgets
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
# EXTRAS=embeddings for models trained with `tiergate train --embeddings`
ARG EXTRAS=""

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY --from=build /wheels /wheels
COPY examples ./examples
RUN pip install "$(ls /wheels/*.whl)${EXTRAS:+[$EXTRAS]}" && rm -rf /wheels && useradd --create-home --uid 10001 tiergate \
    && mkdir -p /etc/tiergate && cp examples/quickstart.yaml /etc/tiergate/config.yaml

USER tiergate
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["tiergate", "serve"]
CMD ["--config", "/etc/tiergate/config.yaml", "--host", "0.0.0.0", "--port", "8080"]
