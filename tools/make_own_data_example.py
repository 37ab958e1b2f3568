"""Writes a small "own data" example as a labelling tool would export it.

    python tools/make_own_data_example.py data/mine [--num 40] [--seed 0]

A stand-in for a practitioner's photos, so that the README's own-data
section can be followed on any machine: the synthetic shapes of the main
job, saved as JPEG photos with their boxes in the two formats most tools
write, plus one large photo for tiled detection::

    OUT/images/NNNNNN.jpg      the photos (320 x 320)
    OUT/boxes.csv              image_path,xmin,ymin,xmax,ymax,label
    OUT/Annotations/NNNNNN.xml Pascal VOC XML of the same boxes
    OUT/large/large.jpg        a 1024 x 768 photo whose objects straddle
                               the borders of 512 px windows
    OUT/large/large.csv        its boxes (for checking tiled detection)

The same seed gives the same files.
"""
import argparse
import csv
import os
import os.path as osp
import sys
from typing import List, Tuple
from xml.sax.saxutils import escape

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import cv2
import numpy as np

from projects.focal_retina.datasets.synthetic_shapes import (SHAPE_CLASSES,
                                                             ShapesSpec,
                                                             _draw_shape,
                                                             render_image)

Box = Tuple[int, int, int, int, str]  # x0, y0, x1, y1 (exclusive), label


def voc_xml(name: str, width: int, height: int, boxes: List[Box]) -> str:
    objects = ''.join(
        f'  <object><name>{escape(lab)}</name><difficult>0</difficult>'
        # VOC coordinates are 1-based and inclusive.
        f'<bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin>'
        f'<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>\n'
        for x0, y0, x1, y1, lab in boxes)
    return (f'<annotation>\n  <filename>{escape(name)}</filename>\n'
            f'  <size><width>{width}</width><height>{height}</height>'
            f'<depth>3</depth></size>\n{objects}</annotation>\n')


def large_photo(seed: int) -> Tuple[np.ndarray, List[Box]]:
    """A 1024 x 768 photo whose objects are each cut by an inner border of
    the 512 px windows of ``--tile 512 --overlap 0.2`` (x = 409, 512, 921;
    y = 256, 512) and seen whole in another window (sides 60-100 px, under
    the 102 px overlap)."""
    rng = np.random.default_rng(seed)
    height, width = 768, 1024
    t = np.linspace(0.0, 1.0, width)[None, :, None]
    c0, c1 = rng.uniform(60, 200, size=(2, 3))
    img = np.repeat(c0 * (1 - t) + c1 * t, height, axis=0)
    img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
    centres = [(512, 150), (409, 600), (921, 400), (200, 256), (700, 512)]
    boxes = []
    for k, (cx, cy) in enumerate(centres):
        side = 60 + 10 * k
        x0, y0 = cx - side // 2, cy - side // 2
        label = k % len(SHAPE_CLASSES)
        color = tuple(int(v) for v in (255 - img[cy, cx]))
        _draw_shape(img, label, (x0, y0, x0 + side, y0 + side), color)
        boxes.append((x0, y0, x0 + side, y0 + side, SHAPE_CLASSES[label]))
    return img, boxes


def write_example(out: str, num: int, seed: int) -> None:
    spec = ShapesSpec(
        seed=seed,
        num_train=num,
        num_val=1,
        img_size=320,
        min_objects=4,
        max_objects=8,
        min_size=16,
        max_size=64)
    spec.validate()
    for sub in ('images', 'Annotations', 'large'):
        os.makedirs(osp.join(out, sub), exist_ok=True)
    rows = []
    for i in range(num):
        img, objects = render_image(spec, 'train', i)
        name = f'{i:06d}.jpg'
        cv2.imwrite(
            osp.join(out, 'images', name), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        boxes = [(x, y, x + w, y + h, SHAPE_CLASSES[o['label']])
                 for o in objects for x, y, w, h in [o['bbox']]]
        rows += [[name, *b] for b in boxes]
        with open(osp.join(out, 'Annotations', f'{i:06d}.xml'), 'w') as f:
            f.write(voc_xml(name, img.shape[1], img.shape[0], boxes))
    with open(osp.join(out, 'boxes.csv'), 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['image_path', 'xmin', 'ymin', 'xmax', 'ymax', 'label'])
        w.writerows(rows)
    img, boxes = large_photo(seed)
    cv2.imwrite(
        osp.join(out, 'large', 'large.jpg'), img,
        [cv2.IMWRITE_JPEG_QUALITY, 95])
    with open(osp.join(out, 'large', 'large.csv'), 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['image_path', 'xmin', 'ymin', 'xmax', 'ymax', 'label'])
        w.writerows([['large.jpg', *b] for b in boxes])
    print(f'{num} photos with {len(rows)} boxes in {out}/images, '
          f'{out}/boxes.csv and {out}/Annotations; a large photo in '
          f'{out}/large/large.jpg')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out', help='output folder, e.g. data/mine')
    parser.add_argument('--num', type=int, default=40, help='photos')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    if args.num < 2:
        parser.error(f'--num {args.num}: expected at least 2 photos')
    write_example(args.out, args.num, args.seed)


if __name__ == '__main__':
    main()
