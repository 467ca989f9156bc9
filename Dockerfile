# syntax=docker/dockerfile:1
#
# clerksync's three services as static binaries (CGO_ENABLED=0) on distroless, as a non-root user.
# One target per service; docker-compose.yml builds each:
#   docker build --target ingest -t clerksync-ingest .
# Migrations are embedded in the worker binary; nothing else is needed at run time.

ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOOS=linux GOFLAGS=-trimpath
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -ldflags="-s -w" -o /out/ ./cmd/ingest ./cmd/worker ./cmd/api

# A static wget for the healthchecks: distroless has no shell and no HTTP client.
FROM busybox:1.37-musl AS busybox

FROM gcr.io/distroless/static-debian12:nonroot AS runtime
COPY --from=busybox /bin/wget /usr/local/bin/wget
USER nonroot:nonroot

FROM runtime AS ingest
COPY --from=build /out/ingest /usr/local/bin/ingest
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/ingest"]

FROM runtime AS worker
COPY --from=build /out/worker /usr/local/bin/worker
EXPOSE 8082
ENTRYPOINT ["/usr/local/bin/worker"]

FROM runtime AS api
COPY --from=build /out/api /usr/local/bin/api
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/api"]
