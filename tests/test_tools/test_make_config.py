"""tools/make_config.py: the config of your own data in one command.

The class names come from the json's ``categories`` in their order (the
order mmdet numbers the labels in: checked by building the dataset from the
written config), train and val must agree, missing files and an existing
config are refused in one line, each start inherits its recipe of
configs/own_data/ (compared with the recipe file loaded by mmengine), and a
written config trains and evaluates with the real tools. Names with quotes,
non-ASCII and mmengine's ``{{ ... }}`` template syntax are kept as written.
"""
import ast
import json
import os
import os.path as osp
from typing import List, Optional, Sequence

import cv2
import numpy as np
import pytest
from mmengine.config import Config

from tests.conftest import ROOT
from tests.test_tools.test_analysis_tools import load_tool
from tests.test_tools.test_cli import run_tool

OWN = osp.join(ROOT, 'configs', 'own_data')
PRESETS = osp.join(ROOT, 'configs', '_base_', 'datasets',
                   'small_data_augment.py')
# Names a config must keep as written: quotes, a backslash, non-ASCII, and
# text that mmengine substitutes in a config file's source ({{ fileBasename
# }}, an environment variable with a default).
ODD = ("it's", 'say "hi"', 'back\\slash', 'café ✓', '{{ fileBasename }}',
       '{{$HOME:x}}')


@pytest.fixture(scope='module')
def tool():
    return load_tool('tools/make_config.py')


def write_coco(path: str,
               categories: List[dict],
               files: Sequence[str],
               boxes: Sequence[tuple] = ()) -> str:
    """A COCO json as the converters write it; ``boxes`` are
    (image index, category id, x, y, w, h)."""
    os.makedirs(osp.dirname(path), exist_ok=True)
    coco = dict(
        images=[
            dict(id=i + 1, file_name=f, width=32, height=32)
            for i, f in enumerate(files)
        ],
        annotations=[
            dict(
                id=k + 1,
                image_id=i + 1,
                category_id=c,
                bbox=[x, y, w, h],
                area=w * h,
                iscrowd=0) for k, (i, c, x, y, w, h) in enumerate(boxes)
        ],
        categories=categories)
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(coco, f, ensure_ascii=False)
    return path


@pytest.fixture
def data(tmp_path, monkeypatch):
    """data/own/ in a fresh working folder: two images, and train / val
    files whose categories are in neither name nor id order."""
    monkeypatch.chdir(tmp_path)
    os.makedirs('data/own/images')
    for name in ('a.png', 'b.png'):
        cv2.imwrite(f'data/own/images/{name}', np.zeros((32, 32, 3), np.uint8))
    cats = [
        dict(id=7, name='zebra'),
        dict(id=2, name=ODD[0]),
        dict(id=5, name='apple')
    ] + [dict(id=10 + i, name=n) for i, n in enumerate(ODD[1:])]
    boxes = [(0, 2, 1, 1, 10, 10), (0, 5, 12, 12, 8, 8), (1, 7, 3, 4, 20, 20)]
    write_coco('data/own/ann/train.json', cats, ['a.png', 'b.png'], boxes)
    write_coco('data/own/ann/val.json', cats, ['b.png'], boxes[2:])
    return cats


def make(tool,
         *extra: str,
         train='data/own/ann/train.json',
         val='data/own/ann/val.json',
         img='data/own/images',
         start: Optional[str] = 'scratch') -> None:
    args = ['mine', '--train', train, '--val', val, '--img-root', img]
    args += ['--start', start] if start else []
    assert tool.main(args + list(extra)) == 0


def refused(tool, capsys, *args: str) -> str:
    """The one-line error of a refused call (exit status 2)."""
    with pytest.raises(SystemExit) as exc:
        tool.main(list(args))
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err and '\n' not in err, err
    return err


def test_classes_from_the_json_in_their_order(tool, data, capsys):
    make(tool)
    names = tuple(c['name'] for c in data)
    assert names == ('zebra', "it's", 'apple') + ODD[1:]
    cfg = Config.fromfile('my_configs/mine.py')
    assert cfg.classes == names
    assert cfg.model.bbox_head.num_classes == len(names)
    for split in ('train', 'val', 'test'):
        dataset = cfg[f'{split}_dataloader'].dataset
        assert dataset.metainfo.classes == names
    # The paths resolve to the given files and folder.
    train, val = cfg.train_dataloader.dataset, cfg.val_dataloader.dataset
    assert osp.samefile(
        osp.join(train.data_root, train.ann_file), 'data/own/ann/train.json')
    assert osp.samefile(
        osp.join(val.data_root, val.ann_file), 'data/own/ann/val.json')
    assert osp.samefile(cfg.val_evaluator.ann_file, 'data/own/ann/val.json')
    assert osp.samefile(
        osp.join(train.data_root, train.data_prefix.img), 'data/own/images')
    assert cfg.data_root == 'data/own/'
    out = capsys.readouterr().out
    assert 'python ' in out and 'tools/train.py my_configs/mine.py' in out

    # mmdet labels the boxes by the json's category order: the name the
    # model reports for a box's label is its category's name.
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    dataset = DATASETS.build(dict(train, pipeline=[]))
    by_id = {c['id']: c['name'] for c in data}
    boxes = json.load(open('data/own/ann/train.json'))['annotations']
    got = sorted(
        (dataset.metainfo['classes'][inst['bbox_label']], inst['bbox'])
        for i in range(len(dataset))
        for inst in dataset.get_data_info(i)['instances'])
    want = sorted((by_id[b['category_id']], [
        b['bbox'][0], b['bbox'][1], b['bbox'][0] + b['bbox'][2], b['bbox'][1] +
        b['bbox'][3]
    ]) for b in boxes)
    assert got == want


@pytest.mark.parametrize('val_names', [('apple', 'zebra'), ('zebra', 'pear')])
def test_train_and_val_classes_must_agree(tool, tmp_path, monkeypatch, capsys,
                                          val_names):
    monkeypatch.chdir(tmp_path)
    os.makedirs('data/images')
    cv2.imwrite('data/images/a.png', np.zeros((8, 8, 3), np.uint8))
    write_coco('data/ann_train.json',
               [dict(id=1, name='zebra'),
                dict(id=2, name='apple')], ['a.png'])
    write_coco('data/ann_val.json',
               [dict(id=i + 1, name=n) for i, n in enumerate(val_names)],
               ['a.png'])
    err = refused(tool, capsys, 'mine', '--train', 'data/ann_train.json',
                  '--val', 'data/ann_val.json', '--img-root', 'data/images',
                  '--start', 'scratch')
    assert (f"data/ann_val.json has classes {val_names} but "
            "data/ann_train.json ('zebra', 'apple')") in err
    assert not osp.exists('my_configs/mine.py')


@pytest.mark.parametrize('which,args,named', [
    ('train', ['--train', 'data/own/ann/nope.json'], 'data/own/ann/nope.json'),
    ('val', ['--val', 'data/own/val.json'], 'data/own/val.json'),
    ('images', ['--img-root', 'data/own/imgs'], 'data/own/imgs'),
    ('wrong images', ['--img-root', 'data/own/ann'], 'data/own/ann')
])
def test_missing_files_are_refused(tool, data, capsys, which, args, named):
    base = {
        '--train': 'data/own/ann/train.json',
        '--val': 'data/own/ann/val.json',
        '--img-root': 'data/own/images',
        '--start': 'coco'
    }
    base.update(dict(zip(args[::2], args[1::2])))
    err = refused(tool, capsys, 'mine', *sum(map(list, base.items()), []))
    assert repr(named) in err or named in err, err
    assert not osp.exists('my_configs')


def test_an_existing_config_is_kept_unless_force(tool, data, capsys):

    def read() -> str:
        with open('my_configs/mine.py') as f:
            return f.read()

    make(tool)
    with open('my_configs/mine.py', 'a') as f:
        f.write('# my edit\n')
    mine = read()
    err = refused(tool, capsys, 'mine', '--train', 'data/own/ann/train.json',
                  '--val', 'data/own/ann/val.json', '--img-root',
                  'data/own/images', '--start', 'coco')
    assert 'my_configs/mine.py exists' in err and '--force' in err
    assert read() == mine
    make(tool, '--force', start='coco')
    text = read()
    assert '# my edit' not in text
    assert 'retinanet_r18_fpn_own_data_coco.py' in text
    assert os.listdir('my_configs') == ['mine.py']  # no temporary left


def _pipeline(preset: str) -> list:
    """The training pipeline of a preset, from the config files."""
    if preset == 'none':  # the from-scratch recipe's own
        return Config.fromfile(osp.join(
            OWN, 'retina_r18_fpn_own_data.py')).train_pipeline
    return Config.fromfile(PRESETS)[f'{preset}_pipeline']


# (--start, --preset, --depth) -> the recipe of docs/own_data.md's table
# and the training pipeline.
STARTS = [
    ('scratch', None, 18, 'retina_r18_fpn_own_data.py', 'none'),
    ('scratch', 'photo', 18, 'retina_r18_fpn_own_data_photo.py', 'photo'),
    ('scratch', 'overhead', 18, 'retina_r18_fpn_own_data_overhead.py',
     'overhead'),
    ('imagenet', None, 18, 'retina_r18_fpn_own_data_imagenet.py', 'photo'),
    ('imagenet', 'overhead', 18, 'retina_r18_fpn_own_data_imagenet.py',
     'overhead'),
    ('imagenet', 'none', 18, 'retina_r18_fpn_own_data_imagenet.py', 'none'),
    ('imagenet', None, 50, 'retinanet_r50_fpn_own_data_imagenet.py', 'photo'),
    ('coco', None, 18, 'retinanet_r18_fpn_own_data_coco.py', 'photo'),
    ('coco', 'none', 18, 'retinanet_r18_fpn_own_data_coco.py', 'none'),
    ('coco', 'overhead', 50, 'retinanet_r50_fpn_own_data_coco.py', 'overhead'),
]


@pytest.mark.parametrize(
    'start,preset,depth,recipe,pipeline',
    STARTS,
    ids=[f'{s}-{p}-{d}' for s, p, d, _, _ in STARTS])
def test_each_start_inherits_its_recipe(tool, data, start, preset, depth,
                                        recipe, pipeline):
    make(
        tool,
        '--depth',
        str(depth),
        *(['--preset', preset] if preset else []),
        start=start)
    with open('my_configs/mine.py', encoding='utf-8') as f:
        tree = ast.parse(f.read())
    base = [
        node.value.value for node in tree.body
        if isinstance(node, ast.Assign) and node.targets[0].id == '_base_'
    ]
    assert len(base) == 1
    assert osp.samefile(osp.join('my_configs', base[0]), osp.join(OWN, recipe))

    from projects.focal_retina.engine.cli import load_config
    cfg = load_config('my_configs/mine.py')  # the tools' checks pass
    ref = Config.fromfile(osp.join(OWN, recipe))
    assert cfg.get('load_from') == ref.get('load_from')
    assert cfg.model.backbone == ref.model.backbone
    assert cfg.model.neck == ref.model.neck
    assert cfg.optim_wrapper == ref.optim_wrapper
    assert cfg.param_scheduler == ref.param_scheduler
    assert cfg.train_cfg == ref.train_cfg
    assert cfg.val_dataloader.dataset.pipeline == ref.val_dataloader.dataset\
        .pipeline
    assert cfg.train_dataloader.dataset.pipeline == _pipeline(pipeline)


def test_a_start_without_recipe_is_refused(tool, data, capsys):
    err = refused(tool, capsys, 'mine', '--train', 'data/own/ann/train.json',
                  '--val', 'data/own/ann/val.json', '--img-root',
                  'data/own/images', '--start', 'scratch', '--depth', '50')
    assert '--start scratch --depth 50' in err and '18' in err
    assert not osp.exists('my_configs/mine.py')


NO_WORKERS = [
    f'{split}_dataloader.{key}' for split in ('train', 'val', 'test')
    for key in ('num_workers=0', 'persistent_workers=False')
]


@pytest.mark.slow
def test_the_written_config_trains_and_evaluates(tmp_path):
    """The example export, converted, renamed to the odd names, made into a
    from-scratch config; one iteration of training, its validation, and
    tools/test.py on the checkpoint."""
    mine = str(tmp_path / 'mine')
    run_tool('tools/make_own_data_example.py', mine, '--num', '5')
    run_tool('tools/dataset_converters/csv2coco.py', f'{mine}/boxes.csv',
             '--img-root', f'{mine}/images', '--out',
             f'{mine}/annotations/ann.json', '--split', '0.8')
    names = {}
    for split in ('train', 'val'):
        path = f'{mine}/annotations/ann_{split}.json'
        coco = json.load(open(path))
        for cat, odd in zip(coco['categories'], ODD):
            names[cat['name']] = cat['name'] = odd
        with open(path, 'w', encoding='utf-8') as f:
            json.dump(coco, f, ensure_ascii=False)
    out = run_tool('tools/make_config.py', 'mine', '--train',
                   f'{mine}/annotations/ann_train.json', '--val',
                   f'{mine}/annotations/ann_val.json', '--img-root',
                   f'{mine}/images', '--start', 'scratch', '--out-dir',
                   str(tmp_path / 'my_configs'))
    config = str(tmp_path / 'my_configs' / 'mine.py')
    assert f'wrote {config}' in out
    assert Config.fromfile(config).classes == ODD[:len(names)]
    work = str(tmp_path / 'work')
    out = run_tool('tools/train.py', config, '--work-dir', work,
                   '--cfg-options', 'train_cfg.max_iters=1',
                   'train_dataloader.batch_size=2', *NO_WORKERS)
    assert 'coco/bbox_mAP' in out  # validated after the last iteration
    assert osp.isfile(osp.join(work, 'iter_1.pth'))
    out = run_tool('tools/test.py', config, osp.join(work, 'iter_1.pth'),
                   '--work-dir', work, '--cfg-options', *NO_WORKERS)
    assert 'coco/bbox_mAP' in out
    # The per-class table names the classes as the json does.
    assert all(name in out for name in ODD[:len(names)]), out[-3000:]


@pytest.mark.slow
def test_offline_coco_start_names_the_scratch_command(tmp_path):
    """README step 2 with ``--start coco`` on a machine without network:
    training stops in one line that names the tools/make_config.py command
    writing the same config from scratch, and that command, run as printed,
    writes a config that trains (in a folder laid out like a clone, so the
    paths are the README's relative ones)."""
    import shlex
    import subprocess
    import sys

    from tests.test_tools.test_cli import tool_env
    from tests.test_tools.test_readme_own_data import refusing_proxy
    clone = tmp_path / 'clone'
    clone.mkdir()
    for name in ('tools', 'configs', 'projects'):
        os.symlink(osp.join(ROOT, name), clone / name)
    proxy = refusing_proxy()
    env = dict(
        tool_env(cpu=True),
        TORCH_HOME=str(tmp_path / 'torch'),  # nothing cached there
        XDG_CACHE_HOME=str(tmp_path / 'cache'),
        http_proxy=proxy,
        https_proxy=proxy,
        HTTP_PROXY=proxy,
        HTTPS_PROXY=proxy,
        no_proxy='',
        NO_PROXY='')

    def run(argv: List[str], rc: int = 0) -> str:
        proc = subprocess.run([sys.executable, *argv],
                              cwd=clone,
                              capture_output=True,
                              text=True,
                              env=env,
                              timeout=600)
        assert proc.returncode == rc, (proc.stdout + proc.stderr)[-3000:]
        return proc.stderr

    small = [
        '--cfg-options', 'train_cfg.max_iters=1',
        'train_dataloader.batch_size=2', *NO_WORKERS
    ]
    run(['tools/make_own_data_example.py', 'data/mine', '--num', '5'])
    run([
        'tools/dataset_converters/csv2coco.py', 'data/mine/boxes.csv',
        '--img-root', 'data/mine/images', '--out',
        'data/mine/annotations/ann.json', '--split', '0.8'
    ])
    files = [
        '--train', 'data/mine/annotations/ann_train.json', '--val',
        'data/mine/annotations/ann_val.json', '--img-root', 'data/mine/images'
    ]
    run(['tools/make_config.py', 'mine', *files, '--start', 'coco'])
    err = run(['tools/train.py', 'my_configs/mine.py', *small], rc=2)
    lines = err.strip().splitlines()
    assert 'Traceback' not in err
    assert lines[-1].startswith('train.py: error: cannot download '
                                'checkpoint https://'), lines[-1]
    scratch = ('python tools/make_config.py mine ' + ' '.join(files) +
               ' --start scratch --force')
    assert lines[-1].endswith(
        f'; or write this config from scratch: {scratch}'), lines[-1]
    # The alternative, as printed; then the same training command.
    run(shlex.split(scratch)[1:])
    with open(clone / 'my_configs' / 'mine.py') as f:
        assert '(--start scratch,' in f.readline()
    run(['tools/train.py', 'my_configs/mine.py', *small])
    assert osp.isfile(clone / 'work_dirs' / 'mine' / 'iter_1.pth')
