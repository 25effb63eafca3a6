#!/bin/sh
# need_wordnet.sh: Debian's wordnet-base (WordNet 3.0 under /usr/share/wordnet),
# installed with apt when it is missing: the demos' data (make demo-sft,
# demo-grpo) is built from it.
set -eu
if [ ! -f /usr/share/wordnet/data.noun ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wordnet-base >&2 ||
        { $SUDO apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wordnet-base >&2; }
fi
