# syntax=docker/dockerfile:1
# BookStore images for Docker users (e.g. with kind). Same layout as
# tests/cluster/images.sh builds without Docker: the binary at /usr/local/bin,
# only the shared libraries it needs (tests/cluster/mkrootfs.sh), user 65532.
# tests/dockerfile/check.sh (in tests/run-all.sh) runs the build stage's steps
# without Docker and fails when this build would.
#
#   docker build -t localhost/bookstore:dev .
#   docker build --target bookstore-operator -t localhost/bookstore-operator:dev .
#   kind load docker-image localhost/bookstore:dev localhost/bookstore-operator:dev

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY services ./services
COPY operator ./operator
COPY config ./config
# A workspace member (the shared test kit): cargo loads every member's manifest.
COPY tests/system ./tests/system
COPY tests/cluster/mkrootfs.sh ./tests/cluster/mkrootfs.sh
# Paths relative to WORKDIR only: tests/dockerfile/check.sh runs this command
# as it stands in a directory holding exactly the files copied above.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin bookstore --bin bookstore-operator \
 && tests/cluster/mkrootfs.sh out/bookstore target/release/bookstore \
 && tests/cluster/mkrootfs.sh out/bookstore-operator target/release/bookstore-operator

FROM scratch AS bookstore-operator
COPY --from=build /src/out/bookstore-operator/ /
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/bookstore-operator"]

FROM scratch AS bookstore
COPY --from=build /src/out/bookstore/ /
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/bookstore"]
