# bnnflow + finn-plus, for `make bitstream` with Vivado mounted from the host.
#
#   docker build -t bnnflow .
#   docker run --rm -it -v /tools/Xilinx:/tools/Xilinx:ro -v $PWD/runs:/opt/bnnflow/runs \
#       -v $PWD/bitstreams:/opt/bnnflow/bitstreams -v $HOME/.finn:/root/.finn \
#       -e XILINX_VIVADO=/tools/Xilinx/Vivado/2024.2 -e XILINX_HLS=/tools/Xilinx/Vitis_HLS/2024.2 \
#       bnnflow make bitstream MODEL=tfc BOARD=Pynq-Z2
#
# Vivado and Vitis HLS are not in the image (licence, ~100 GB): mount the host
# installation at the same path and point XILINX_VIVADO / XILINX_HLS at it;
# see docs/compile.md. Not built in bnnflow's CI (no Docker engine there).

# Ubuntu 22.04: the OS FINN's own container uses and one Vivado 2022.2-2025.x supports.
FROM ubuntu:22.04

ARG DEBIAN_FRONTEND=noninteractive
# Python 3.11 (finn-plus needs >= 3.11), a C/C++ toolchain for FINN's finn_xsi
# simulator binding and cppsim, git/unzip/wget for `finn deps update`, and the
# X/ncurses/locale libraries Vivado's Tcl batch mode loads.
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv python3.11-dev build-essential cmake git make \
        unzip zip wget ca-certificates locales libtinfo5 libncurses5 libx11-6 libxext6 \
        libxrender1 libxtst6 libxi6 libfreetype6 libglib2.0-0 \
    && locale-gen en_US.UTF-8 \
    && rm -rf /var/lib/apt/lists/*
ENV LANG=en_US.UTF-8 LC_ALL=en_US.UTF-8

WORKDIR /opt/bnnflow
# Installed exactly as `make install` does (lock with --no-deps, then brevitas and
# finn-plus, then bnnflow editable); see requirements/README.md for why.
COPY pyproject.toml README.md Makefile ./
COPY requirements ./requirements
COPY src ./src
# make install installs bnnflow-board too: the deployment format is defined there
COPY host_driver ./host_driver
RUN make install PYTHON=python3.11 && rm -rf /root/.cache/pip

COPY benchmarks ./benchmarks
COPY tests ./tests
COPY docs ./docs

# FINN keeps its dependencies (finn-hlslib, board files, finn_xsi) under
# ~/.finn by default; mount it to keep them between runs. FINN_BUILD_DIR is
# where FINN writes generated code and Vivado projects.
ENV PATH=/opt/bnnflow/.venv/bin:$PATH \
    FINN_BUILD_DIR=/tmp/finn_build \
    PYTHONUNBUFFERED=1
RUN mkdir -p /tmp/finn_build runs bitstreams

CMD ["bnnflow", "--help"]
