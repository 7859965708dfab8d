"""Prints the YAML documents of a file as one JSON array (merge keys resolved)."""

import json
import sys

import yaml

with open(sys.argv[1]) as f:
    print(json.dumps(list(yaml.safe_load_all(f))))
