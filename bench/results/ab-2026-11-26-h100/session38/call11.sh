#!/usr/bin/env bash
# session 38 call 11: unpack ../shared (model + data) for the next call's engine tests
tar -xJf .dev/shared.tar.xz -C .dev && ls .dev/shared/models .dev/shared/data | head; echo "t=$SECONDS"
