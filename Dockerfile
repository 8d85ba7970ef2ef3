# gorn and the example Flask app in a small image: gorn runs as PID 1 (exec-form ENTRYPOINT,
# no shell anywhere on the way), as a non-root user, and works with a read-only root
# filesystem (the worker runtime runs from memory; nothing is written to disk). Workers are
# sized from the container's cgroup limits (or GORN_CPUS). Build: docker build -t app .
#
# Replace the example with your app: your requirements in the venv stage, your code in /app,
# your MODULE:APP at the end of CMD. test/container_test.go runs this final stage's
# ENTRYPOINT, CMD, USER, ENV and WORKDIR as they are, in a PID namespace with a read-only
# root and cgroup limits.

# The app's virtual environment, built where pip and a shell are, then copied.
FROM python:3.12-slim-bookworm AS venv
RUN python -m venv /venv
COPY examples/flask/requirements.txt /tmp/requirements.txt
RUN /venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt

# The worker runtime compiled to bytecode by the image's interpreter (worker/bytecode), for
# go build to embed: the workers then import no runtime source at start-up.
FROM python:3.12-slim-bookworm AS bytecode
COPY worker/ /src/worker/
RUN bash /src/worker/bytecode/compile.sh

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
COPY --from=bytecode /src/worker/bytecode/ worker/bytecode/
# The native accelerator (CPython limited API) compiled by this image's gcc against the
# final image's Python headers, then gorn, which embeds it: static (CGO_ENABLED=0), so it
# runs on any base image.
COPY --from=venv /usr/local/include/python3.12 /python-include
RUN PYTHON_INCLUDE=/python-include NATIVE_REQUIRED=1 bash worker/native/build.sh \
 && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/gorn ./cmd/gorn

# Example, not built by default: gorn installed from its wheel (make wheel) in a plain
# python: image, as a requirements.txt line would. docker build --target wheel-example .
# test/wheel_test.go runs this stage with the wheel it built.
FROM python:3.12-slim-bookworm AS wheel-example
COPY dist/ /tmp/dist/
COPY examples/flask/requirements.txt /tmp/requirements.txt
# gorn from dist/ alone (pip picks the wheel of this machine's architecture): its version is
# whatever make wheel built.
# hadolint ignore=DL3013
RUN python -m venv /venv \
 && /venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt \
 && /venv/bin/pip install --no-cache-dir --no-index --find-links /tmp/dist gorn
COPY examples/flask/ /app/
WORKDIR /app
USER 65532:65532
EXPOSE 8000 9191
STOPSIGNAL SIGTERM
# /venv/bin/gorn runs the venv's python without activating it.
ENTRYPOINT ["/venv/bin/gorn"]
CMD ["--bind", "0.0.0.0:8000", "--metrics-bind", "0.0.0.0:9191", "--shutdown-delay", "5", "app:app"]

# The image (the default target).
FROM python:3.12-slim-bookworm
COPY --from=venv /venv /venv
COPY --from=build /out/gorn /usr/local/bin/gorn
COPY examples/flask/ /app/
WORKDIR /app
ENV PATH=/venv/bin:/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
    VIRTUAL_ENV=/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# A numeric user, so Kubernetes' runAsNonRoot can check it.
USER 65532:65532
EXPOSE 8000 9191
# TERM is gorn's graceful stop: /readyz fails at once, it serves on for --shutdown-delay
# while endpoints update, then drains within --graceful-timeout (30 s; give the runtime's
# stop timeout more: docker stop -t 40, terminationGracePeriodSeconds in Kubernetes).
STOPSIGNAL SIGTERM
ENTRYPOINT ["gorn"]
CMD ["--bind", "0.0.0.0:8000", "--metrics-bind", "0.0.0.0:9191", "--shutdown-delay", "5", "--access-logfile", "-", "app:app"]
