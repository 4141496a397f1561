"""Generated gRPC/protobuf stubs (by scripts/gen_protos.py from rayinfra/api/proto/).

Do not edit; do not import directly from library code: use ``rayinfra.api.stubs``, which
imports them lazily.
"""
