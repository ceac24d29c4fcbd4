# One image for both components (controller and token-server are subcommands).
# Build: docker build -t ghcr.io/servicekey-operator/servicekey-operator:0.1.0 .
# Without Docker: make image (bin/image/servicekey-operator.tar, for ctr/docker/podman load).
FROM golang:1.26 AS build
WORKDIR /src
# Dependencies first, so source edits reuse the module cache layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static (no cgo), reproducible paths, no debug info.
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w" -o /out/servicekey-operator .

# scratch: the static binary and the CA certificates, nothing else (no shell, no package
# manager). `make image` assembles the same image without a container engine
# (hack/image) from bin/linux/servicekey-operator and the build machine's CA bundle.
FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/servicekey-operator /servicekey-operator
# A numeric non-root user (no /etc/passwd needed); the chart's securityContext asks for the same.
USER 65532:65532
ENTRYPOINT ["/servicekey-operator"]
