"""Writes the config of your own dataset in one command.

    python tools/make_config.py NAME --train ANN_TRAIN --val ANN_VAL
        --img-root IMAGES --start {coco,imagenet,scratch}
        [--preset {photo,overhead,none}] [--depth {18,50}]
        [--out-dir my_configs] [--force]

reads the COCO json written by ``tools/dataset_converters/*2coco.py`` (the
class names are those of its ``categories``, in their order: mmdet numbers
the labels in that order, whatever order a config lists them in) and writes
``my_configs/NAME.py``, inheriting the recipe of ``configs/own_data/`` for
the start:

* ``coco``: mmdet's COCO RetinaNet (R-18, or R-50 with ``--depth 50``)
  fine-tuned; everything but the classifier loads;
* ``imagenet``: an ImageNet ResNet backbone (torchvision's weights);
* ``scratch``: the small R-18 RetinaNet from scratch (nothing to download).

``--preset`` picks the training pipeline: the augmentation presets of
``configs/_base_/datasets/small_data_augment.py`` for ground-level
(``photo``) or overhead and microscope photos (``overhead``), or ``none``
(resize and left-right flip). By default, the recipe's own: ``photo`` for
coco and imagenet, ``none`` for scratch.

The file sets what the hand-written config of docs/own_data.md sets
(classes, ``data_root``, ``num_classes``, the dataloaders' folder, files and
class names, the evaluator's file) and is checked as the tools check a
config (``projects/focal_retina/engine/cli.py: load_config``) before it is
put in place. An existing file is kept unless ``--force``. The train and
val files must name the same classes in the same order. The next commands
are printed.
"""
import argparse
import json
import os
import os.path as osp
import shlex
import sys
import tempfile
from typing import List, Optional, Sequence, Tuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from projects.focal_retina.engine import cli  # noqa: E402

Names = Tuple[str, ...]
STARTS = ('coco', 'imagenet', 'scratch')
PRESETS = ('photo', 'overhead', 'none')
# The recipe's own training pipeline, used when --preset is not given.
DEFAULT_PRESET = dict(coco='photo', imagenet='photo', scratch='none')
# (start, depth, preset) -> the recipe of configs/own_data/ that trains
# exactly so. Another preset of the coco and imagenet starts inherits their
# photo recipe and replaces its training pipeline.
RECIPES = {
    ('scratch', 18, 'none'): 'retina_r18_fpn_own_data.py',
    ('scratch', 18, 'photo'): 'retina_r18_fpn_own_data_photo.py',
    ('scratch', 18, 'overhead'): 'retina_r18_fpn_own_data_overhead.py',
    ('imagenet', 18, 'photo'): 'retina_r18_fpn_own_data_imagenet.py',
    ('imagenet', 50, 'photo'): 'retinanet_r50_fpn_own_data_imagenet.py',
    ('coco', 18, 'photo'): 'retinanet_r18_fpn_own_data_coco.py',
    ('coco', 50, 'photo'): 'retinanet_r50_fpn_own_data_coco.py',
}
# The training pipeline of each preset, as config code: the presets are
# variables of every photo recipe's bases; 'none' is the from-scratch
# recipe's pipeline, restated because the COCO recipes' train_pipeline
# variable is mmdet's (1333 x 800).
PIPELINE_CODE = {
    'photo':
    '_base_.photo_pipeline',
    'overhead':
    '_base_.overhead_pipeline',
    'none':
    """[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', with_bbox=True),
            dict(type='Resize', scale=(512, 512), keep_ratio=True),
            dict(type='RandomFlip', prob=0.5),
            dict(type='PackDetInputs')
        ]""",
}
START_TEXT = dict(
    coco="mmdet's COCO RetinaNet R-{depth} fine-tuned",
    imagenet='an ImageNet ResNet-{depth} backbone',
    scratch='the small R-18 RetinaNet from scratch')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Write my_configs/NAME.py for your own COCO-json data.')
    parser.add_argument(
        'name', help='config name: writes OUT_DIR/NAME.py (work_dirs/NAME)')
    parser.add_argument(
        '--train',
        required=True,
        metavar='ANN_TRAIN',
        help='COCO json of the training images (a converter\'s '
        'OUT_train.json)')
    parser.add_argument(
        '--val',
        required=True,
        metavar='ANN_VAL',
        help='COCO json of the validation images (also the test set)')
    parser.add_argument(
        '--img-root',
        required=True,
        metavar='IMAGES',
        help='the folder the json file names are relative to (the '
        "converter's --img-root)")
    parser.add_argument(
        '--start',
        required=True,
        choices=STARTS,
        help='coco: fine-tune mmdet\'s COCO RetinaNet; imagenet: ImageNet '
        'backbone; scratch: from scratch, nothing to download')
    parser.add_argument(
        '--preset',
        choices=PRESETS,
        help='training augmentation: photo (ground-level), overhead '
        '(aerial, microscope: quarter turns too) or none; default: photo '
        'for coco and imagenet, none for scratch')
    parser.add_argument(
        '--depth',
        type=int,
        choices=(18, 50),
        default=18,
        help='ResNet depth (50: coco and imagenet only)')
    parser.add_argument(
        '--out-dir', default='my_configs', help='folder of the config')
    parser.add_argument(
        '--force', action='store_true', help='overwrite an existing config')
    return parser.parse_args(argv)


def read_coco(path: str) -> Tuple[Names, List[str]]:
    """The class names (the ``categories`` in their order) and the image
    file names of a COCO json; fails with one line naming ``path``."""
    if not osp.isfile(path):
        cli.fail(f'annotation file {path!r} does not exist')
    try:
        with open(path, encoding='utf-8') as f:
            coco = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        cli.fail(f'{path}: not a readable json file ({exc})')
    if not isinstance(coco, dict) or not isinstance(
            coco.get('categories'), list):
        cli.fail(f'{path}: no "categories" list; expected COCO json as '
                 'tools/dataset_converters/*2coco.py write it')
    names = []
    for i, cat in enumerate(coco['categories']):
        name = cat.get('name') if isinstance(cat, dict) else None
        if not isinstance(name, str):
            cli.fail(f'{path}: categories[{i}] has no string "name": {cat!r}')
        names.append(name)
    try:
        cli.check_class_names(names, f'{path}: categories')
    except ValueError as exc:
        cli.fail(exc.args[0])
    images = coco.get('images')
    if not isinstance(images, list) or not images:
        cli.fail(f'{path}: no "images" (expected a non-empty list)')
    files = [
        img.get('file_name') for img in images
        if isinstance(img, dict) and isinstance(img.get('file_name'), str)
    ]
    return tuple(names), files


def check_images(img_root: str, files: List[str], ann: str) -> int:
    """How many of ``files`` are missing under ``img_root``; fails when
    none is there (the wrong folder)."""
    missing = [f for f in files if not osp.isfile(osp.join(img_root, f))]
    if files and len(missing) == len(files):
        cli.fail(
            f'--img-root {img_root!r}: none of the {len(files)} images of '
            f'{ann} is there (e.g. {osp.join(img_root, files[0])!r}); give '
            "the folder the converter's --img-root named")
    return len(missing)


def recipe_for(start: str, depth: int, preset: str) -> Tuple[str, bool]:
    """(recipe file name, whether its training pipeline is replaced)."""
    if (start, depth, preset) in RECIPES:
        return RECIPES[start, depth, preset], False
    if (start, depth, 'photo') in RECIPES:
        return RECIPES[start, depth, 'photo'], True
    depths = sorted({d for s, d, _ in RECIPES if s == start})
    cli.fail(
        f'--start {start} --depth {depth}: no recipe in configs/own_data/ '
        f'(depths for {start}: {", ".join(map(str, depths))})')


def literal(value) -> str:
    """Python source for a string or a tuple of strings, safe for any
    text: ``repr`` quotes and escapes it, and braces are escaped too
    because mmengine replaces ``{{ fileBasename }}``, ``{{$VAR:x}}`` and
    ``{{ _base_.x }}`` in the text of a config file before parsing it."""
    if isinstance(value, tuple):
        items = ', '.join(literal(v) for v in value)
        return f'({items}, )' if len(value) == 1 else f'({items})'
    # In repr's output every brace is the string's own: \x7b and \x7d are
    # the same characters inside either kind of quotes.
    return repr(value).replace('{', '\\x7b').replace('}', '\\x7d')


def classes_code(classes: Names) -> str:
    one_line = f'classes = {literal(classes)}'
    if len(one_line) <= 79:
        return one_line
    return 'classes = (\n' + ''.join(f'    {literal(c)},\n'
                                     for c in classes) + ')'


def dir_literal(path: str) -> str:
    """A folder as the configs write it: with a trailing slash."""
    return literal(path.rstrip('/') + '/' if path.strip('/') else path)


def config_text(recipe: str, start: str, depth: int, preset: str,
                replace_pipeline: bool, classes: Names, data_root: str,
                train_ann: str, val_ann: str, img_prefix: str) -> str:
    """The config's source (``_base_`` is relative to the config file)."""
    pipeline = ''
    if replace_pipeline:
        pipeline = (',\n        pipeline=' + PIPELINE_CODE[preset])
    return f"""\
# Your own data, written by tools/make_config.py (--start {start}, \
--depth {depth},
# --preset {preset}): the recipe, your classes (from the annotation files,
# in their order) and your files. Edit it freely; the tool overwrites it
# only with --force.
_base_ = {literal(recipe)}

{classes_code(classes)}
data_root = {dir_literal(data_root)}
model = dict(bbox_head=dict(num_classes=len(classes)))
train_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file={literal(train_ann)},
        data_prefix=dict(img={dir_literal(img_prefix)}){pipeline}))
val_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        metainfo=dict(classes=classes),
        ann_file={literal(val_ann)},
        data_prefix=dict(img={dir_literal(img_prefix)})))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + {literal(val_ann)})
test_evaluator = val_evaluator
"""


def split_root(train: str, val: str,
               img_root: str) -> Tuple[str, str, str, str]:
    """(data_root, train and val files and image folder relative to it):
    the folder holding all three, as the configs write it. Relative input
    paths stay relative to the current folder (where the tools run)."""
    absolute = any(osp.isabs(p) for p in (train, val, img_root))
    full = [osp.abspath(p) for p in (train, val, img_root)]
    root = osp.commonpath(
        [osp.dirname(full[0]), osp.dirname(full[1])] + [full[2]])
    parts = [osp.relpath(p, root) for p in full]
    if absolute:
        return (root, *parts)
    rel = osp.relpath(root)
    return ('./' if rel == '.' else rel, *parts)


def check_written(path: str) -> 'object':
    """The config as tools/train.py loads it (one line and exit 2 if that
    fails: a bug of this tool, reported before the file is put in
    place)."""
    import projects.focal_retina  # noqa: F401  (registers the types)
    return cli.load_config(path)


def weights_line(cfg) -> Optional[str]:
    """Which weights the config downloads on its first run."""
    url = cfg.get('load_from')
    init = (cfg.model.backbone.get('init_cfg') or {})
    url = url or (init.get('checkpoint') if isinstance(init, dict) else None)
    if not url or '://' not in url:
        return None
    return (f'weights: {url}, downloaded on the first run (offline: '
            'docs/own_data.md#offline)')


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    name = args.name[:-3] if args.name.endswith('.py') else args.name
    if not name or osp.basename(name) != name or name.startswith('.'):
        cli.fail(f'NAME {args.name!r}: expected a file name without folders '
                 '(the config is OUT_DIR/NAME.py)')
    out = osp.join(args.out_dir, name + '.py')
    if osp.exists(out) and not args.force:
        cli.fail(f'{out} exists; add --force to overwrite it')
    train_classes, train_files = read_coco(args.train)
    val_classes, val_files = read_coco(args.val)
    if val_classes != train_classes:
        cli.fail(f'{args.val} has classes {val_classes} but {args.train} '
                 f'{train_classes}: convert both with the same --classes')
    if not osp.isdir(args.img_root):
        cli.fail(f'--img-root: image folder {args.img_root!r} does not exist')
    missing = sum(
        check_images(args.img_root, files, ann)
        for files, ann in ((train_files, args.train), (val_files, args.val)))
    preset = args.preset or DEFAULT_PRESET[args.start]
    recipe, replace = recipe_for(args.start, args.depth, preset)

    data_root, train_ann, val_ann, img_prefix = split_root(
        args.train, args.val, args.img_root)
    out_dir = osp.abspath(args.out_dir)
    os.makedirs(out_dir, exist_ok=True)
    base = osp.relpath(osp.join(ROOT, 'configs', 'own_data', recipe), out_dir)
    text = config_text(base, args.start, args.depth, preset, replace,
                       train_classes, data_root, train_ann, val_ann,
                       img_prefix)
    # Checked under a temporary name beside the target (its _base_ is
    # relative to the folder), then moved into place in one step.
    fd, tmp = tempfile.mkstemp(prefix=f'.{name}.', suffix='.py', dir=out_dir)
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            f.write(text)
        # mkstemp's file is private (0600); give it a new file's mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        cfg = check_written(tmp)
        os.replace(tmp, out)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)

    start = START_TEXT[args.start].format(depth=args.depth)
    print(f'wrote {out}: {len(train_classes)} classes {train_classes}, '
          f'{start}, preset {preset} (inherits configs/own_data/{recipe})')
    if missing:
        print(f'note: {missing} image(s) named in the annotation files are '
              f'not under {args.img_root}; training leaves them out')
    line = weights_line(cfg)
    if line:
        print(line)
    tool = osp.relpath(osp.join(ROOT, 'tools'))
    work = osp.join('work_dirs', name)
    q = shlex.quote
    print('next: check the anchors, train, test the best checkpoint:')
    for cmd in (f'analysis/dataset_stats.py {q(out)} --pipeline test',
                f'train.py {q(out)} --amp', f'test.py {q(out)} ' +
                q(osp.join(work, 'best_coco_bbox_mAP.pth'))):
        print(f'  python {q(osp.join(tool, ""))}{cmd}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
