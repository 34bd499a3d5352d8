# sam2-serve for NVIDIA GPUs, the image of deploy/kuberay/rayservice.yaml (README, "On a GPU
# cluster"). The build stage compiles sam2's CUDA extension with nvcc from the devel image; the
# runtime image gets the finished virtualenv only.
#   docker build -t REGISTRY/sam2-serve:TAG .                                # checkpoints inside
#   docker build --build-arg CHECKPOINTS=mount -t REGISTRY/sam2-serve:TAG .  # a volume brings them
#
# torch 2.13's CUDA build targets CUDA 13.0 (GPU nodes need driver 580 or newer). For an older
# driver pick a CUDA 12 pair the PyTorch index has 2.13 for, e.g.
#   --build-arg CUDA_VERSION=12.8.1 --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG CUDA_VERSION=13.0.2
ARG UBUNTU_VERSION=24.04
ARG PYTHON_VERSION=3.11

FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu${UBUNTU_VERSION} AS build
ARG PYTHON_VERSION
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
# No GPU during the build, so name the architectures to compile for: A100, A10/A40, L4/L40S,
# H100/H200, B200, RTX PRO 6000 Blackwell.
ARG TORCH_CUDA_ARCH_LIST="8.0;8.6;8.9;9.0;10.0;12.0"
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

# Python 3.11 as in CI (Ubuntu 24.04 ships 3.12): from the deadsnakes PPA. Versions of the apt
# packages follow the base image's release rather than pins.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get install -y --no-install-recommends \
        "python${PYTHON_VERSION}" "python${PYTHON_VERSION}-dev" "python${PYTHON_VERSION}-venv" \
    && rm -rf /var/lib/apt/lists/* \
    && "python${PYTHON_VERSION}" -m venv /opt/venv

WORKDIR /src
COPY constraints.txt ./
# The CUDA wheels of torch and torchvision, at the versions constraints.txt pins (hence no
# version on torchvision here, nor on the build tools, pyproject.toml's lower bounds).
# hadolint ignore=DL3013
RUN pip install -c constraints.txt --index-url "${TORCH_INDEX_URL}" torch==2.13.0 torchvision \
    && pip install "setuptools>=77" wheel

# sam2 1.1.0 with its CUDA extension (sam2._C: connected components for mask hole filling),
# built against the torch above (no build isolation). SAM2_BUILD_ALLOW_ERRORS=0 fails the build
# instead of quietly installing sam2 without the extension, and the last line checks it is there.
RUN SAM2_BUILD_CUDA=1 SAM2_BUILD_ALLOW_ERRORS=0 \
        pip install -c constraints.txt --no-build-isolation sam2==1.1.0 \
    && python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('sam2._C') is None)"

COPY pyproject.toml README.md ./
COPY deployments deployments
COPY ingress ingress
COPY session_store session_store
RUN pip install -c constraints.txt --no-build-isolation .


FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu${UBUNTU_VERSION}
ARG PYTHON_VERSION
# download: scripts/download_checkpoints.sh puts the checkpoint of serve_config.yaml's model
# (or of MODELS, a space-separated list) into its checkpoint_dir at build time.
# mount: checkpoint_dir stays empty for a volume (README).
ARG CHECKPOINTS=download
ARG MODELS=""
ENV DEBIAN_FRONTEND=noninteractive \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TQDM_DISABLE=1

# wget and bash: KubeRay's probes of the Ray head run `wget ... | grep success`.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get install -y --no-install-recommends \
        "python${PYTHON_VERSION}" ca-certificates curl wget \
    && apt-get purge -y --auto-remove software-properties-common \
    && rm -rf /var/lib/apt/lists/* \
    && (userdel --remove ubuntu 2>/dev/null || true) \
    && useradd --no-log-init --create-home --uid 1000 --user-group sam2

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY serve_config.yaml serve_config.local.yaml ./
COPY scripts/download_checkpoints.sh scripts/

# checkpoints/ (where download_checkpoints.sh writes) is a link to serve_config.yaml's
# checkpoint_dir, so the files land where the replicas look for them.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN read -r model dir < <(python -c "import yaml; \
args = yaml.safe_load(open('serve_config.yaml'))['applications'][0]['args']; \
print(args['model'], args['checkpoint_dir'])") \
    && mkdir -p "$dir" \
    && ln -s "$dir" checkpoints \
    && if [ "$CHECKPOINTS" = download ]; then \
        read -r -a models <<< "${MODELS:-$model}" \
        && scripts/download_checkpoints.sh "${models[@]}"; \
    fi \
    && chown -R sam2:sam2 "$dir"

# Numeric, so Kubernetes can check runAsNonRoot against it.
USER 1000:1000
EXPOSE 8000 8265
