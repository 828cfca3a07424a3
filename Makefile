# netdra's everyday commands. The README's two commands are `scripts/demo.sh` (`make demo`)
# and `scripts/test.sh` (`make test`); everything else is for working on it.
IMAGE ?= netdra:dev
CLUSTER ?= netdra

.PHONY: build test lint bench image image-archive kind-cluster kind-load deploy helm-install demo

build:
	cargo build --release -p netdra-driver

test:
	scripts/test.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	scripts/api-listings.sh --check
	cargo deny check licenses bans

bench:
	cargo bench --workspace --profile ci

image:
	docker build -f deploy/Dockerfile -t $(IMAGE) .

# The same image without Docker: an OCI archive (target/image/netdra.tar).
image-archive:
	scripts/image.sh

kind-cluster:
	kind create cluster --name $(CLUSTER) --config deploy/kind.yaml

kind-load: image
	kind load docker-image $(IMAGE) --name $(CLUSTER)

deploy:
	kubectl apply -f deploy/install.yaml

helm-install:
	scripts/helm.sh install netdra deploy/helm/netdra --namespace netdra --create-namespace

demo:
	scripts/demo.sh
