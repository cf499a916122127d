"""What the reproduction adds to linfilt (loaded through the entry-point group `linfilt.plugins`).

Names only, so that loading it imports neither torch nor the data code: `linfilt audit` stays
light. `tests/test_layers.py` checks these lists against the modules they name.
"""
from linfilt import plugins

COMMANDS = ("demo", "data", "train", "reproduce", "report", "bench")
ARCHITECTURES = ("mlp", "cifar_cnn", "att_resnet")
DATASETS = ("mnist", "cifar10", "att_faces", "digits")

for _name in COMMANDS:
    plugins.register_command(_name, f"linfilt.paper.cli.{_name}")
for _name in ARCHITECTURES:
    plugins.register_architecture(_name, "linfilt.paper.models:build")
for _name in DATASETS:
    plugins.register_dataset(_name, "linfilt.paper.data:load")
