# syntax=docker/dockerfile:1
# BookStore images for Docker users (e.g. with kind). Same layout as
# tests/cluster/images.sh builds without Docker: the binary at /usr/local/bin,
# only the shared libraries it needs (tests/cluster/mkrootfs.sh), user 65532.
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
COPY tests/cluster/mkrootfs.sh ./tests/cluster/mkrootfs.sh
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin bookstore --bin bookstore-operator \
 && tests/cluster/mkrootfs.sh /out/bookstore target/release/bookstore \
 && tests/cluster/mkrootfs.sh /out/bookstore-operator target/release/bookstore-operator

FROM scratch AS bookstore-operator
COPY --from=build /out/bookstore-operator/ /
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/bookstore-operator"]

FROM scratch AS bookstore
COPY --from=build /out/bookstore/ /
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/bookstore"]
