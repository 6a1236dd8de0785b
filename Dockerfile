# flute-serve image: builds the `flute` binary and runs `flute serve` as a non-root user.
#
#   GPU (default): builds on a CUDA devel base, runs on the matching CUDA runtime base.
#     docker build -t flute-serve .
#   CPU only: both stages on plain Debian 12 (no nvcc, so the CUDA backend is left out).
#     docker build -t flute-serve:cpu \
#       --build-arg BUILD_BASE=debian:12 --build-arg RUNTIME_BASE=debian:12 .
#
# The model is not in the image: mount its directory at /model (see deploy/README.md).
ARG BUILD_BASE=nvidia/cuda:13.0.0-devel-ubuntu24.04
ARG RUNTIME_BASE=nvidia/cuda:13.0.0-runtime-ubuntu24.04

# ---------------------------------------------------------------------------------------
FROM ${BUILD_BASE} AS build
# -march of the host code: x86-64-v3 (AVX2/FMA) runs on any recent x86 server; "native"
# would tie the image to the build machine's CPU.
ARG FLUTE_CPU_ARCH=x86-64-v3
ARG BUILD_JOBS=2
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends \
      build-essential cmake ninja-build pkg-config ca-certificates \
      libabsl-dev libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
      prometheus-cpp-dev libsentencepiece-dev libpcre2-dev nlohmann-json3-dev libcli11-dev \
      libopenblas-dev libgtest-dev libgmock-dev libbenchmark-dev \
      sentencepiece \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLUTE_CPU_ARCH=${FLUTE_CPU_ARCH} \
 && ninja -C /build -j${BUILD_JOBS} flute flute_spm
# Stage the program, its plugins (libflute_spm.so; libflute_cuda.so, the CUDA engine, when
# nvcc built it: it loads cuBLAS at run time, which the CUDA runtime base image provides), and spm_train (`flute init-random-model` trains its tokenizer with it),
# with every shared library they need (found by ldd), so the runtime stage
# needs no -dev packages and no distribution-specific runtime package names. Left out: the C
# library (the runtime base has the same one) and the NVIDIA driver (the container runtime
# mounts it from the host).
RUN mkdir -p /opt/flute/bin /opt/flute/lib \
 && cp /build/bin/flute "$(command -v spm_train)" /opt/flute/bin/ \
 && cp /build/lib/libflute_spm.so /opt/flute/lib/ \
 && if [ -f /build/lib/libflute_cuda.so ]; then cp /build/lib/libflute_cuda.so /opt/flute/lib/; fi \
 && for f in /opt/flute/bin/* /opt/flute/lib/libflute_*.so; do \
      ldd "$f" | awk '$2 == "=>" && $3 ~ /^\// {print $3}'; \
    done | sort -u \
    | grep -Ev '/(libc|libm|libdl|libpthread|librt|libresolv|ld-linux[^/]*|libcuda|libnvidia[^/]*)\.so' \
    | xargs -r cp -L -t /opt/flute/lib/ \
 && /opt/flute/bin/flute --help > /dev/null

# ---------------------------------------------------------------------------------------
FROM ${RUNTIME_BASE} AS runtime
COPY --from=build /opt/flute /opt/flute
ENV LD_LIBRARY_PATH=/opt/flute/lib \
    PATH=/opt/flute/bin:${PATH}
# A fixed non-root uid (not 1000, which Ubuntu-based images already give to "ubuntu").
RUN groupadd --system --gid 10001 flute \
 && useradd --system --uid 10001 --gid flute --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin flute \
 && mkdir -p /model && chown flute:flute /model
USER 10001:10001
# /model is the mount point of the model directory (-v /path/to/model:/model:ro). No VOLUME
# instruction: an anonymous volume there would only hide a mistake (no model mounted), and
# buildah's `run -v` cannot mount over a declared VOLUME.
# 50051: gRPC (flute.v1.TextGeneration, grpc.health.v1.Health, reflection); 9400: /metrics.
EXPOSE 50051 9400
# Readiness of the generation service through the gRPC health protocol. The start period
# covers loading (and quantizing) the model.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["/opt/flute/bin/flute", "health", "--addr", "127.0.0.1:50051", \
       "--service", "flute.v1.TextGeneration", "--timeout", "4"]
ENTRYPOINT ["/opt/flute/bin/flute"]
CMD ["serve", "--model", "/model", "--host", "0.0.0.0", "--port", "50051", \
     "--metrics-port", "9400", "--device", "auto"]
