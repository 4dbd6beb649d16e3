#!/bin/sh
# Builds the plugin's binary, ./git-hook (the entry point in plugin.toml).
set -eu
cd "$(dirname "$0")"
go build -o git-hook .
