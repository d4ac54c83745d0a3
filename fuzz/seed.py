#!/usr/bin/env python3
"""Writes small valid seed inputs for every fuzz target into fuzz/corpus/<target>/.

Run from fuzz/: `python3 seed.py`. Uses only the standard library; the VOC seed also copies the
first two raccoon XML files from /work/shared when they exist (never committed: corpus/ is ignored).
"""
import json
import os
import struct
import zlib
from pathlib import Path

here = Path(__file__).resolve().parent


def put(target, name, data):
    d = here / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


put("annotation_file", "lines", "img/a.jpg 10,20,300,400,0 5.5,6,7,8,2\nimg/b.jpg\n\nimg/c.jpg 1,1,9,9,1\n")
put("annotation_file", "bad", "a.jpg 3,4,x,9,0 1,2,3\nb.jpg -1,2,1,9,7\na.jpg 3,4,x,9,0 1,2,3\n")
put("classes_anchors", "classes", "person\ndog\ncat\n")
put("classes_anchors", "anchors", "10,13, 16,30, 33,23, 30,61, 62,45, 59,119, 116,90, 156,198, 373,326\n")
put("voc_xml", "voc", """<annotation><filename>000005.jpg</filename>
<size><width>500</width><height>375</height><depth>3</depth></size>
<object><name>chair</name><difficult>0</difficult>
<bndbox><xmin>263</xmin><ymin>211</ymin><xmax>324</xmax><ymax>339</ymax></bndbox></object>
</annotation>""")
raccoon = Path("/work/shared/datasets/raccoon/annotations")
if raccoon.is_dir():
    for p in sorted(raccoon.glob("*.xml"))[:2]:
        put("voc_xml", p.name, p.read_bytes())
coco = {
    "images": [{"id": 42, "file_name": "a.jpg", "width": 640, "height": 480},
               {"id": 7, "file_name": "b.jpg", "width": 100, "height": 100}],
    "annotations": [{"id": 1, "image_id": 42, "category_id": 18, "bbox": [10.7, 20.2, 30.9, 40.5], "iscrowd": 0},
                    {"id": 3, "image_id": 42, "category_id": 1, "bbox": [100, 100, 20, 20], "iscrowd": 1}],
    "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
}
put("coco_json", "coco", b"\x00" + json.dumps(coco).encode())


def png(w, h):
    raw = b"".join(b"\x00" + bytes((x * 7 + y * 3) & 255 for x in range(w * 3)) for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


put("image_decode", "small.png", png(8, 6))
imgs = Path("/work/shared/datasets/raccoon/images")
if imgs.is_dir():
    smallest = min(imgs.glob("*.jpg"), key=lambda p: p.stat().st_size, default=None)
    if smallest is not None:
        put("image_decode", "raccoon.jpg", smallest.read_bytes())
put("darknet_cfg", "tiny", """[net]
width=416
height=416
channels=3

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
filters=18
size=1
stride=1
activation=linear

[yolo]
mask=0,1,2
classes=1

[route]
layers=-4, 1

[shortcut]
from=-3

[upsample]
stride=2
""")
# Tiny YOLOv3's first conv: 16 x (beta, gamma, mean, var) + 16x3x3x3 kernel = 496 floats.
floats = b"".join(struct.pack("<f", i * 0.001) for i in range(496))
put("darknet_weights", "v02", struct.pack("<iiiq", 0, 2, 0, 7) + floats)
put("darknet_weights", "v01", struct.pack("<iiii", 0, 1, 0, 7) + floats)
header = json.dumps({
    "backbone.conv0.bn.bias": {"dtype": "F32", "shape": [16], "data_offsets": [0, 64]},
    "backbone.conv0.bn.running_var": {"dtype": "F16", "shape": [16], "data_offsets": [64, 96]},
    "__metadata__": {"format": "pt"},
}).encode()
body = struct.pack("<16f", *([0.25] * 16)) + struct.pack("<16e", *([1.0] * 16))
put("safetensors_checkpoint", "small", struct.pack("<Q", len(header)) + header + body)
print("seeds written to", here / "corpus")
