# One image for both components (controller and token-server are subcommands).
# Build: docker build -t ghcr.io/servicekey-operator/servicekey-operator:0.1.0 .
FROM golang:1.26 AS build
WORKDIR /src
# Dependencies first, so source edits reuse the module cache layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static (no cgo), reproducible paths, no debug info.
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w" -o /out/servicekey-operator .

# distroless static: no shell, no package manager, CA certificates and tzdata only.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/servicekey-operator /servicekey-operator
# 65532 is distroless's nonroot user; the chart's securityContext asks for the same.
USER 65532:65532
ENTRYPOINT ["/servicekey-operator"]
