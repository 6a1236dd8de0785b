#!/usr/bin/env bash
# session 39 call 12: carries the man-page model and data (../shared) for call 13's engine tests
set -u
tar -xJf .dev/shared.tar.xz -C .dev && ls .dev/shared
