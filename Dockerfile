# segmq's three commands in one small image.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/ ./snapshot ./producer ./consumer

FROM debian:bookworm-slim
COPY --from=build /out/ /usr/local/bin/
RUN useradd --uid 10001 --create-home segmq && mkdir -p /data /out && chown segmq /data /out
USER segmq
WORKDIR /data
