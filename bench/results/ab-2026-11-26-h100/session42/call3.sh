#!/usr/bin/env bash
# session 42 call 3: unpack the shared model and data (carried alone: with the engine pack it exceeds one call's 64 MiB)
tar -xJf .dev/shared.tar.xz -C .dev && ls .dev/shared && nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
