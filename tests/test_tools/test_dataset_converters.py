"""tools/dataset_converters: CSV, Pascal VOC XML and YOLO txt to COCO.

Tiny datasets are generated (images written with cv2); every output is
compared field by field with COCO written out by hand here, including what
was dropped, why, where and how often.
"""
import json
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.conftest import ROOT
from tools.dataset_converters import common, csv2coco, voc2coco, yolo2coco


def image(path, w, h) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), np.full((h, w, 3), 127, np.uint8))


def write(path, text) -> str:
    os.makedirs(osp.dirname(str(path)), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)
    return str(path)


def ann(id, image_id, category_id, bbox, iscrowd=0) -> dict:
    return dict(
        id=id,
        image_id=image_id,
        category_id=category_id,
        bbox=pytest.approx(bbox),
        area=pytest.approx(bbox[2] * bbox[3]),
        iscrowd=iscrowd,
        segmentation=[])


def img(id, file_name, width, height) -> dict:
    return dict(id=id, file_name=file_name, width=width, height=height)


def cats(*names) -> list:
    return [
        dict(id=i, name=n, supercategory='none')
        for i, n in enumerate(names, start=1)
    ]


CSV = """image_path,xmin,ymin,xmax,ymax,label
a.jpg,10,10,30,40,tree
a.jpg,-5,0,20,20,tree
a.jpg,10,10,10,20,tree
a.jpg,20,30,15,45,tree
b.png,0,0,10,nan,tree
b.png,70,0,80,10,tree
b.png,59.5,0,70,10,tree
b.png,1,1,5,5,car
b.png,2.5,3,12.5,13,person
missing.jpg,1,1,5,5,tree
bad.jpg,1,1,5,5,tree
sub/d.png,,,,,
./a.jpg,0,0,100,50,person
"""


@pytest.fixture
def csv_data(tmp_path):
    image(tmp_path / 'a.jpg', 100, 50)
    image(tmp_path / 'b.png', 60, 40)
    image(tmp_path / 'c.png', 60, 40)  # named by no row
    image(tmp_path / 'sub' / 'd.png', 30, 30)
    write(tmp_path / 'bad.jpg', 'not an image')
    return write(tmp_path / 'boxes.csv', CSV)


def test_csv(csv_data):
    builder, report = csv2coco.convert(
        csv_data, classes=['tree', 'person'], unlisted_as_negatives=True)
    assert builder.to_dict() == dict(
        images=[
            img(1, 'a.jpg', 100, 50),
            img(2, 'b.png', 60, 40),
            img(3, 'sub/d.png', 30, 30),
            img(4, 'c.png', 60, 40)
        ],
        annotations=[
            ann(1, 1, 1, [10, 10, 20, 30]),
            ann(2, 1, 1, [0, 0, 20, 20]),  # clipped
            ann(3, 1, 2, [0, 0, 100, 50]),  # './a.jpg': boxes by image
            ann(4, 2, 2, [2.5, 3, 10, 10])
        ],
        categories=cats('tree', 'person'))
    assert report.dropped == {
        'zero or negative size': ['boxes.csv:4', 'boxes.csv:5'],
        'non-finite coordinate': ['boxes.csv:6'],
        'outside the image': ['boxes.csv:7'],
        'under 1 px after clipping': ['boxes.csv:8'],
        "unknown label 'car'": ['boxes.csv:9'],
        'missing image': ['missing.jpg'],
        'box of a dropped image': ['boxes.csv:11', 'boxes.csv:12'],
        'unreadable image': ['bad.jpg'],
    }
    assert report.notes == {'clipped to the image': ['boxes.csv:3']}


def test_csv_defaults_no_header_and_reordered_header(csv_data, tmp_path):
    """Without --classes: every label, sorted; without the flag, unlisted
    images are left out. Header-less and reordered-header files read the
    same."""
    builder, report = csv2coco.convert(csv_data)
    coco = builder.to_dict()
    assert coco['categories'] == cats('car', 'person', 'tree')
    assert [i['file_name'] for i in coco['images']] == \
        ['a.jpg', 'b.png', 'sub/d.png']
    assert report.counts()['box of a dropped image'] == 2
    assert "unknown label 'car'" not in report.counts()
    rows = CSV.splitlines()[1:]
    plain = write(tmp_path / 'plain.csv', '\n'.join(rows) + '\n')
    assert csv2coco.convert(plain)[0].to_dict() == coco
    moved = ['label,xmax,ymax,xmin,ymin,image_path,extra'] + [
        ','.join([r[5], r[3], r[4], r[1], r[2], r[0], 'x'])
        for r in (line.split(',') for line in rows)
    ]
    moved = write(tmp_path / 'moved.csv', '\n'.join(moved) + '\n')
    assert csv2coco.convert(moved)[0].to_dict() == coco


@pytest.mark.parametrize('text,message', [
    ('a.jpg,1,2,3,4\n', 'bad.csv:1: 5 fields; expected 6'),
    ('a.jpg,1,2,3,4,x\na.jpg,1,two,3,4,x\n',
     "bad.csv:2: coordinate 'two' is not a number"),
    ('a.jpg,1,2,3,4,\n', 'bad.csv:1: empty label'),
    ('file,x1,y1,x2,y2,label\n', "bad.csv:1: header"),
])
def test_csv_malformed(tmp_path, text, message):
    image(tmp_path / 'a.jpg', 10, 10)
    path = write(tmp_path / 'bad.csv', text)
    with pytest.raises(common.InputError, match='^' + message):
        csv2coco.convert(path)


def run(tool, *args):
    return subprocess.run([
        sys.executable,
        osp.join(ROOT, 'tools', 'dataset_converters', tool), *args
    ],
                          capture_output=True,
                          text=True,
                          cwd=ROOT,
                          timeout=120)


def test_csv_cli_split_and_error(csv_data, tmp_path):
    out = str(tmp_path / 'out' / 'ann.json')
    proc = run('csv2coco.py', csv_data, '--out', out, '--classes',
               'tree,person', '--split', '0.5', '--seed', '3')
    assert proc.returncode == 0, proc.stderr
    assert 'dropped: missing image: 1 (missing.jpg)' in proc.stdout
    assert 'dropped: zero or negative size: 2 (boxes.csv:4, boxes.csv:5)' \
        in proc.stdout
    parts = []
    for name in ('ann_train.json', 'ann_val.json'):
        with open(str(tmp_path / 'out' / name)) as f:
            parts.append(json.load(f))
    train, val = ([i['id'] for i in p['images']] for p in parts)
    # 3 images (a, b, sub/d): round(0.5 * 3) = 2 for training
    assert len(train) == 2 and sorted(train + val) == [1, 2, 3]
    for part, ids in zip(parts, (train, val)):  # boxes follow their image
        assert {a['image_id'] for a in part['annotations']} <= set(ids)
    assert sum(len(p['annotations']) for p in parts) == 4
    assert sorted(os.listdir(tmp_path / 'out')) == \
        ['ann_train.json', 'ann_val.json']  # no temporary file left
    again = run('csv2coco.py', csv_data, '--out', out, '--classes',
                'tree,person', '--split', '0.5', '--seed', '3')
    assert again.returncode == 0
    with open(str(tmp_path / 'out' / 'ann_train.json')) as f:
        assert json.load(f) == parts[0]  # same seed, same split
    bad = write(tmp_path / 'bad.csv', 'a.jpg,1,2\n')
    proc = run('csv2coco.py', bad, '--out', out)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        'csv2coco.py: error: bad.csv:1: 3 fields; expected 6: '
        'image_path,xmin,ymin,xmax,ymax,label'
    ]


def test_converted_csv_loads_in_mmdet(csv_data, tmp_path):
    """mmdet's own reader sees the boxes and the negatives written."""
    from mmdet.datasets import CocoDataset
    builder, report = csv2coco.convert(
        csv_data, classes=['tree', 'person'], unlisted_as_negatives=True)
    out = str(tmp_path / 'ann.json')
    common.write_outputs(builder, report, out, None, 0, str(tmp_path))
    ds = CocoDataset(
        ann_file=out,
        metainfo=dict(classes=('tree', 'person')),
        data_prefix=dict(img=str(tmp_path)),
        pipeline=[],
        test_mode=True)
    got = {
        osp.relpath(d['img_path'], str(tmp_path)):
        [(i['bbox'], i['bbox_label']) for i in d['instances']]
        for d in (ds.get_data_info(k) for k in range(len(ds)))
    }
    assert got == {
        'a.jpg': [([10, 10, 30, 40], 0), ([0, 0, 20, 20], 0),
                  ([0, 0, 100, 50], 1)],
        'b.png': [([2.5, 3, 12.5, 13], 1)],
        'sub/d.png': [],
        'c.png': []
    }


def test_split():
    ids = list(range(1, 11))
    train, val = common.split_ids(ids, 0.8, seed=0)
    assert len(train) == 8 and len(val) == 2
    assert sorted(train + val) == ids
    assert common.split_ids(ids[::-1], 0.8, seed=0) == (train, val)
    assert common.split_ids(ids, 0.8, seed=1) != (train, val)
    assert [len(p) for p in common.split_ids([1, 2], 0.99, 0)] == [1, 1]
    assert [len(p) for p in common.split_ids([1, 2], 0.01, 0)] == [1, 1]
    for bad in (0, 1, 1.5):
        with pytest.raises(common.InputError, match='--split'):
            common.split_ids(ids, bad, 0)
    builder = common.CocoBuilder(['x'])
    for i in range(4):
        builder.add_image(f'{i}.jpg', 10, 10)
    builder.add_box(2, 'x', (0, 0, 5, 5))
    assert builder.to_dict([2, 3])['annotations'][0]['image_id'] == 2
    assert builder.to_dict([1, 4])['annotations'] == []


def test_atomic_write_keeps_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / 'ann.json')
    common.write_json_atomic(dict(old=1), path)

    def boom(obj, f):
        f.write('{"half":')
        raise RuntimeError('disk full')

    monkeypatch.setattr(common.json, 'dump', boom)
    with pytest.raises(RuntimeError):
        common.write_json_atomic(dict(new=1), path)
    with open(path) as f:
        assert json.load(f) == dict(old=1)
    assert os.listdir(tmp_path) == ['ann.json']


def test_exif_rotated_size(tmp_path):
    """A JPEG stored 40 x 20 with EXIF orientation 6 (rotate 90) is 20 x 40
    as mmcv/cv2 decode it; the converter writes that size."""
    from PIL import Image
    exif = Image.Exif()
    exif[0x0112] = 6
    path = str(tmp_path / 'r.jpg')
    Image.new('RGB', (40, 20)).save(path, exif=exif)
    h, w = cv2.imread(path).shape[:2]
    assert common.image_size(path) == (w, h) == (20, 40)


VOC_OBJ = ('<object><name>{}</name><difficult>{}</difficult><bndbox>'
           '<xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax>'
           '</bndbox></object>')


def voc_xml(filename, w, h, *objects) -> str:
    return (f'<annotation><filename>{filename}</filename><size><width>{w}'
            f'</width><height>{h}</height><depth>3</depth></size>' +
            ''.join(VOC_OBJ.format(*o) for o in objects) + '</annotation>')


@pytest.fixture
def voc_data(tmp_path):
    root = tmp_path / 'VOC2007'
    image(root / 'JPEGImages' / '0001.jpg', 100, 80)
    image(root / 'JPEGImages' / '0002.jpg', 50, 50)
    anns = root / 'Annotations'
    write(
        anns / '0001.xml',
        voc_xml('0001.jpg', 100, 80, ('dog', 0, 11, 21, 51, 61),
                ('cat', 1, 1, 1, 101, 30.5), ('zebra', 0, 1, 1, 9, 9),
                ('dog', 0, 5, 5, 5, 9), ('dog', 0, 90, 70, 120, 90)))
    write(anns / '0002.xml', voc_xml('0002.jpg', 60, 60))  # no object
    write(anns / '0003.xml', voc_xml('0003.jpg', 10, 10,
                                     ('dog', 0, 1, 1, 5, 5)))
    write(root / 'ImageSets' / 'Main' / 'train.txt', '0002\n0001\n')
    return root


def test_voc(voc_data):
    from mmdet.evaluation import voc_classes
    builder, report, img_root = voc2coco.convert(
        str(voc_data / 'Annotations'), classes=voc_classes())
    assert img_root == str(voc_data / 'JPEGImages')
    cat, dog = 8, 12  # 1-based places in mmdet's voc_classes()
    assert builder.to_dict() == dict(
        images=[img(1, '0001.jpg', 100, 80),
                img(2, '0002.jpg', 50, 50)],
        annotations=[
            ann(1, 1, dog, [10, 20, 40, 40]),  # 1-based -> 0-based
            ann(2, 1, cat, [0, 0, 100, 29.5], iscrowd=1),  # difficult
            ann(3, 1, dog, [89, 69, 11, 11])  # clipped at 100 x 80
        ],
        categories=cats(*voc_classes()))
    assert report.dropped == {
        "unknown label 'zebra'": ['0001.xml: object 3'],
        'zero or negative size': ['0001.xml: object 4'],
        'missing image': ['0003.jpg'],
        'box of a dropped image': ['0003.xml: object 1'],
    }
    assert report.notes == {
        'difficult -> iscrowd=1': ['0001.xml: object 2'],
        'clipped to the image': ['0001.xml: object 5'],
        'XML <size> differs from the image (image size used)': ['0002.xml'],
    }


def test_voc_options(voc_data):
    """Devkit folder + --ids (its order), found classes, --difficult drop,
    --zero-based."""
    builder, report, _ = voc2coco.convert(
        str(voc_data),
        ids_file=str(voc_data / 'ImageSets' / 'Main' / 'train.txt'),
        difficult='drop',
        minus_one=False)
    coco = builder.to_dict()
    assert [i['file_name'] for i in coco['images']] == \
        ['0002.jpg', '0001.jpg']
    assert coco['categories'] == cats('cat', 'dog', 'zebra')
    assert [(a['category_id'], a['bbox'])
            for a in coco['annotations']] == [(2, [11, 21, 40, 40]),
                                              (3, [1, 1, 8, 8]),
                                              (2, [90, 70, 10, 10])]
    assert report.counts() == {'difficult': 1, 'zero or negative size': 1}


@pytest.mark.parametrize('text,message', [
    ('<annotation><object>', r'^bad.xml:1:\d+: not valid XML'),
    ('<annotation><object><name>dog</name></object></annotation>',
     '^bad.xml: object 1: no <name> or no <bndbox>'),
    (voc_xml('a.jpg', 5, 5, ('dog', 0, 1, 'x', 3, 4)),
     r"^bad.xml: object 1 \('dog'\): bndbox \['1', 'x', '3', '4'\]"),
])
def test_voc_malformed(tmp_path, text, message):
    write(tmp_path / 'bad.xml', text)
    with pytest.raises(common.InputError, match=message):
        voc2coco.convert(str(tmp_path))


@pytest.fixture
def yolo_data(tmp_path):
    images, labels = tmp_path / 'images' / 'train', tmp_path / 'labels' / \
        'train'
    image(images / 'x.jpg', 100, 50)
    image(images / 'y.png', 40, 40)
    image(images / 'z.jpg', 20, 20)  # no label file: a negative
    write(
        labels / 'x.txt', '0 0.5 0.5 0.2 0.4\n'
        '1 0.05 0.5 0.2 0.2\n'
        '2 0.5 0.5 0.1 0.1\n'
        '0 0.5 0.5 0 0.1\n'
        '\n'
        '1 nan 0.5 0.1 0.1\n')
    write(labels / 'y.txt', '')  # empty: a negative
    write(labels / 'orphan.txt', '0 0.5 0.5 0.1 0.1\n')
    write(tmp_path / 'data.yaml', 'names:\n  0: car\n  1: person\n')
    return tmp_path


def test_yolo(yolo_data):
    names = yolo2coco.read_names(str(yolo_data / 'data.yaml'))
    assert names == ['car', 'person']
    builder, report = yolo2coco.convert(
        str(yolo_data / 'images' / 'train'), names)
    assert builder.to_dict() == dict(
        images=[
            img(1, 'x.jpg', 100, 50),
            img(2, 'y.png', 40, 40),
            img(3, 'z.jpg', 20, 20)
        ],
        annotations=[
            ann(1, 1, 1, [40, 15, 20, 20]),
            ann(2, 1, 2, [0, 20, 15, 10])  # clipped at x = 0
        ],
        categories=cats('car', 'person'))
    assert report.dropped == {
        "unknown label '2'": ['x.txt:3'],
        'zero or negative size': ['x.txt:4'],
        'non-finite coordinate': ['x.txt:6'],
        'missing image': ['orphan.txt'],
        'box of a dropped image': ['orphan.txt:1'],
    }
    assert report.notes == {'clipped to the image': ['x.txt:2']}


def test_yolo_darknet_layout_cli(tmp_path):
    """Labels beside the images, a names file, classes.txt not a label
    file; the CLI names a malformed line."""
    image(tmp_path / 'd' / 'p.jpg', 10, 10)
    write(tmp_path / 'd' / 'p.txt', '0 0.5 0.5 0.5 0.5\n')
    names = write(tmp_path / 'd' / 'classes.txt', 'tree\n')
    out = str(tmp_path / 'ann.json')
    proc = run('yolo2coco.py', str(tmp_path / 'd'), '--names', names, '--out',
               out)
    assert proc.returncode == 0, proc.stderr
    assert '  nothing dropped' in proc.stdout
    with open(out) as f:
        coco = json.load(f)
    assert coco['images'] == [img(1, 'p.jpg', 10, 10)]
    assert coco['annotations'][0]['bbox'] == [2.5, 2.5, 5.0, 5.0]
    write(tmp_path / 'd' / 'p.txt', '0 0.5 0.5 0.5\n')
    proc = run('yolo2coco.py', str(tmp_path / 'd'), '--names', names, '--out',
               out)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        'yolo2coco.py: error: p.txt:1: 4 fields; expected 5: class cx cy w h'
    ]
    write(tmp_path / 'd' / 'p.txt', 'car 0.5 0.5 0.5 0.5\n')
    with pytest.raises(common.InputError, match="^p.txt:1: 'car 0.5"):
        yolo2coco.convert(str(tmp_path / 'd'), ['tree'])
