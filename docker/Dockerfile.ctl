# syntax=docker/dockerfile:1
# loptctl alone, for submitting and watching jobs from outside the learner's container:
#   docker build -f docker/Dockerfile.ctl -t loptctl .
#   docker run --rm --network lopt_default -v $PWD/job.textproto:/job.textproto:ro \
#     loptctl --learner learner:50051 submit /job.textproto
ARG DEBIAN_RELEASE=12

FROM debian:${DEBIAN_RELEASE} AS build
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq && apt-get install -y -q --no-install-recommends \
      build-essential cmake ninja-build pkg-config git ca-certificates \
      libtorch-dev libopenblas0-pthread \
      libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc \
      libabsl-dev librocksdb-dev prometheus-cpp-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The four Debian images' build stages are the same up to here, word for word, and build all
# four services: the first image built compiles them, the others reuse its layers (docker
# build's cache; buildah bud --layers), instead of compiling the project again for each image.
# deploy/check/check_dockerfiles.js checks that they stay the same.
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DLOPT_BUILD_TESTS=OFF -DLOPT_BUILD_BENCH=OFF \
    && cmake --build build --target lopt-learner loptctl lopt-buffer lopt-worker \
    && mkdir -p /out/all \
    && cp build/learner/lopt-learner build/cli/loptctl build/buffer_server/lopt-buffer \
          build/worker/lopt-worker /out/all/ \
    && strip /out/all/*
# This image's binaries, and the packages that own the libraries they load.
RUN mkdir -p /out/bin \
    && cp /out/all/loptctl /out/bin/ \
    && docker/runtime-deps.sh /out/bin/* > /out/runtime-packages.txt

FROM debian:${DEBIAN_RELEASE}-slim
ENV DEBIAN_FRONTEND=noninteractive
COPY --from=build /out/runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update -qq \
    && apt-get install -y -q --no-install-recommends ca-certificates $(cat /tmp/runtime-packages.txt) \
    && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt \
    && useradd --system --uid 10001 --user-group --home-dir /home/lopt --create-home lopt
COPY --from=build /out/bin/ /usr/local/bin/
USER 10001:10001
WORKDIR /home/lopt
ENTRYPOINT ["loptctl"]
CMD ["--help"]
