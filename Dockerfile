# Build gorn, then run the example Flask app with gorn as PID 1 (exec-form ENTRYPOINT, so
# signals reach gorn directly). Workers are sized from the container's cgroup limits.
# The worker runtime's bytecode for the runtime image's interpreter (worker/bytecode).
FROM python:3.11-slim-bookworm AS bytecode
WORKDIR /src
COPY worker/ worker/
RUN bash worker/bytecode/compile.sh

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
COPY --from=bytecode /src/worker/bytecode/ worker/bytecode/
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/gorn ./cmd/gorn

FROM python:3.11-slim-bookworm
RUN python -m venv /venv
ENV VIRTUAL_ENV=/venv PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1
COPY examples/flask/requirements.txt /app/requirements.txt
RUN pip install --no-cache-dir -r /app/requirements.txt
COPY examples/flask/ /app/
COPY --from=build /out/gorn /usr/local/bin/gorn
WORKDIR /app
USER 65534:65534
EXPOSE 8000 9191
# Runs with a read-only root filesystem: gorn and its workers write nothing to disk.
ENTRYPOINT ["gorn", "--bind", "0.0.0.0:8000", "--metrics-bind", "0.0.0.0:9191", "--shutdown-delay", "5", "--access-logfile", "-"]
CMD ["app:app"]
