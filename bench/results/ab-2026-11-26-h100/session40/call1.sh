#!/usr/bin/env bash
# session 40 call 1: unpack the shared model and data (carried alone: the two archives exceed one call's 64 MiB)
tar -xJf .dev/shared.tar.xz -C .dev && ls .dev/shared && nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
