"""Parameters and GFLOPs of every paper config, beside the paper's time.

    python tools/analysis/model_complexity.py [--csv CSV] [--filter REGEX]
        [--size H W] [--results NAME] [--doc PAGE]

One row per config of ``configs/paper_settings.csv`` (every config the
file names, in its order; a config that reproduces several paper cells is
one row naming its tables). The model is built from the config with
random weights (``init_cfg`` dropped: nothing is downloaded) and counted
as mmdet's ``tools/analysis_tools/get_flops.py`` counts it: mmengine's
``FlopAnalyzer`` on the tensor-mode forward (backbone, neck and head; no
box decoding or NMS) and ``parameter_count`` -- the counters of mmengine's
``get_model_complexity_info``, without its second trace for activations.
Like mmdet's (and fvcore's) figure, a GFLOP here is 1e9 multiply-adds.

The input is the paper's test size: a 4:3 image (COCO's commonest shape,
640 x 480) resized as the config's test pipeline does, shorter side
``test_scale`` and longer side at most ``max_size`` (800 -> 800 x 1067),
then padded to the data preprocessor's ``pad_size_divisor`` (800 x 1088),
the tensor the network sees. ``--size H W`` counts every config at one
given size instead (tests, quick looks).

Configs that build the same network (the same model config once the
initialisation, training and test settings and the loss parameters are
set aside) at the same size are counted once.

The paper gives inference times (an Nvidia M40, Table 1e; Figure 2 plots the
same points) for RetinaNet with ResNet-50/101-FPN, 3 scales x 3 ratios of
anchors, at 400-800 px; a config with that backbone depth, anchors and test
scale gets that time (the caffe- and pytorch-style ResNets alike: the
paper's own were MSRA's caffe-style models). Table 2's ResNeXt model has no
time in the paper.

``--results NAME`` writes ``benchmarks/results/NAME.json`` (default
``model_complexity`` for a run over the whole table) and ``--doc PAGE``
refills the page's ``<!-- begin result: NAME.json#table -->`` block.
"""
import argparse
import json
import math
import os.path as osp
import re
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

# yapf: disable
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from figure_io import ROOT, fail  # noqa: E402

from benchmarks import results_io  # noqa: E402
from projects.focal_retina.utils import paper_settings  # noqa: E402

# yapf: enable

# The paper's Table 1e: (ResNet depth, test scale) -> ms per image on an
# Nvidia M40 (R-50-FPN / R-101-FPN, 3 x 3 anchors; the points of Figure 2).
PAPER_MS = {
    (50, 400): 64,
    (50, 500): 72,
    (50, 600): 98,
    (50, 700): 121,
    (50, 800): 153,
    (101, 400): 81,
    (101, 500): 90,
    (101, 600): 122,
    (101, 700): 154,
    (101, 800): 198,
}
# Model-config keys that do not change the network's forward: weights
# init, training targets and sampling, test-time decoding and NMS, and the
# head's loss-only arguments (the prior only sets the initial bias).
NOT_ARCHITECTURE = ('init_cfg', 'train_cfg', 'test_cfg', 'data_preprocessor',
                    'prior_prob', 'normalizer', 'pretrained')
# Of a loss config only these shape the head (sigmoid: K outputs, softmax:
# K + 1).
LOSS_KEEP = ('type', 'use_sigmoid')


def configs_of(rows: List[Dict[str, str]]) -> Dict[str, Dict[str, Any]]:
    """The table's configs in order, each with its rows' tables and the
    row fields that say which paper time applies."""
    out: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        entry = out.setdefault(
            row['config'],
            dict(
                tables=[],
                depth=row['depth'],
                backbone=row['backbone'],
                style=row['style'],
                test_scale=row['test_scale'],
                max_size=row['max_size'],
                anchors=(row['scales'], row['ratios'])))
        if row['table'] not in entry['tables']:
            entry['tables'].append(row['table'])
    return out


def backbone_name(backbone: str, depth: str) -> str:
    """'ResNet-50', 'ResNeXt-101 64x4d' from the table's two columns."""
    family, _, width = backbone.partition(' ')
    return f'{family}-{depth}' + (f' {width}' if width else '')


def paper_ms(entry: Dict[str, Any]) -> Optional[int]:
    """The paper's M40 time for this backbone depth, anchors and scale."""
    if entry['backbone'] != 'ResNet' or entry['anchors'] != ('3', '0.5;1;2'):
        return None
    try:
        return PAPER_MS.get((int(entry['depth']), int(entry['test_scale'])))
    except ValueError:
        return None


def paper_input_size(test_scale: int, max_size: int,
                     divisor: int) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """A 640 x 480 image resized to ``test_scale`` (shorter side), longer
    side at most ``max_size``, keeping the ratio as mmdet's ``Resize``
    with ``keep_ratio`` does; and that size padded to ``divisor``.

    Returns:
        ((h, w), (padded h, padded w)).
    """
    scale = min(test_scale / 480, max_size / 640)
    h, w = int(480 * scale + 0.5), int(640 * scale + 0.5)
    d = max(int(divisor or 1), 1)
    return (h, w), (math.ceil(h / d) * d, math.ceil(w / d) * d)


def architecture(model_cfg: Dict[str, Any]) -> Any:
    """``model_cfg`` without what does not change the forward (see
    :data:`NOT_ARCHITECTURE`, :data:`LOSS_KEEP`), as plain data."""
    if isinstance(model_cfg, dict):
        out = {}
        for key, value in model_cfg.items():
            if key in NOT_ARCHITECTURE:
                continue
            if key.startswith('loss') and isinstance(value, dict):
                value = {k: v for k, v in value.items() if k in LOSS_KEEP}
            out[key] = architecture(value)
        return out
    if isinstance(model_cfg, (list, tuple)):
        return [architecture(v) for v in model_cfg]
    return model_cfg


def build_model(model_cfg: Dict[str, Any]):
    """The model of ``model_cfg`` with random weights, in eval mode."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    import projects.focal_retina  # noqa: F401  (our registered modules)
    init_default_scope('mmdet')
    cfg = dict(model_cfg)
    cfg['backbone'] = dict(cfg['backbone'], init_cfg=None)
    model = MODELS.build(cfg)
    model.eval()
    return model


def count(model, size: Tuple[int, int]) -> Dict[str, float]:
    """Parameters and multiply-adds of the tensor-mode forward of one
    image of ``size`` (mmengine's FlopAnalyzer and parameter_count)."""
    import torch
    from mmengine.analysis import FlopAnalyzer, parameter_count

    x = torch.zeros(1, 3, *size)
    with torch.no_grad():
        analyzer = FlopAnalyzer(model, (x, ))
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        flops = float(analyzer.total())
    return dict(params=int(parameter_count(model)['']), flops=flops)


def measure(configs: Dict[str, Dict[str, Any]],
            size: Optional[Tuple[int, int]] = None,
            log=print) -> Tuple[Dict[str, Dict[str, Any]], int]:
    """Counts every config (each distinct network and size once).

    Returns:
        ({config: its record}, the number of networks counted).
    """
    from mmengine.config import Config

    done: Dict[str, Dict[str, float]] = {}
    out = {}
    for path, entry in configs.items():
        if not osp.isfile(osp.join(ROOT, path)):
            fail(f'{path}: config named in the settings table does not '
                 'exist')
        cfg = Config.fromfile(osp.join(ROOT, path))
        model_cfg = cfg.model.to_dict()
        divisor = (model_cfg.get('data_preprocessor')
                   or {}).get('pad_size_divisor', 1)
        if size is None:
            image, padded = paper_input_size(
                int(entry['test_scale']), int(entry['max_size']), divisor)
        else:
            image = padded = tuple(size)
        key = json.dumps([architecture(model_cfg), padded],
                         sort_keys=True,
                         default=str)
        if key not in done:
            t0 = time.time()
            done[key] = count(build_model(model_cfg), padded)
            log(f'{path}: {padded[0]}x{padded[1]}, '
                f"{done[key]['params'] / 1e6:.2f} M params, "
                f"{done[key]['flops'] / 1e9:.1f} GFLOPs "
                f'({time.time() - t0:.1f} s)')
        same = [p for p, r in out.items() if r['_key'] == key]
        out[path] = dict(
            tables=entry['tables'],
            backbone=backbone_name(entry['backbone'], entry['depth']),
            style=entry['style'],
            image=list(image),
            input=list(padded),
            params=done[key]['params'],
            gflops=done[key]['flops'] / 1e9,
            paper_ms=paper_ms(entry),
            same_network_as=same[0] if same else None,
            _key=key)
    for record in out.values():
        del record['_key']
    return out, len(done)


def markdown(records: Dict[str, Dict[str, Any]]) -> str:
    """The table the docs embed."""
    rows = []
    for path, r in records.items():
        ms = r['paper_ms']
        rows.append(
            (f'`{path}`', ', '.join(r['tables']),
             f"{r['backbone']} {r['style']}",
             f"{r['input'][0]}x{r['input'][1]}", f"{r['params'] / 1e6:.2f}",
             f"{r['gflops']:.1f}", f'{ms}' if ms is not None else '—'))
    return results_io.markdown_table(
        ('config', 'paper', 'backbone', 'input (padded)', 'params (M)',
         'GFLOPs', 'paper ms (M40)'), rows)


def refill(page: str, name: str) -> None:
    """Refills the page's ``begin result: NAME.json#table`` block only."""
    with open(page) as f:
        text = f.read()
    begin = re.compile(r'^\s*<!--\s*begin result:\s*' + re.escape(name) +
                       r'\.json#table\s*-->\s*$')
    lines, out, i, found = text.split('\n'), [], 0, False
    while i < len(lines):
        out.append(lines[i])
        if begin.match(lines[i]):
            end = i + 1
            while end < len(lines) and not results_io.END_BLOCK.match(
                    lines[end]):
                end += 1
            if end == len(lines):
                fail(f'{page}: the {name}.json#table block never ends')
            out += results_io.read_results(name)['table'].split('\n')
            i, found = end, True
            continue
        i += 1
    if not found:
        fail(f'{page}: no <!-- begin result: {name}.json#table --> block')
    with open(page, 'w') as f:
        f.write('\n'.join(out))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0].strip())
    parser.add_argument(
        '--csv',
        default=osp.relpath(paper_settings.TABLE, ROOT),
        help='the settings table (default %(default)s)')
    parser.add_argument(
        '--filter', help='only configs whose path matches this regex')
    parser.add_argument(
        '--size',
        type=int,
        nargs=2,
        metavar=('H', 'W'),
        help='count every config at this input size instead of its test '
        'size')
    parser.add_argument(
        '--results',
        metavar='NAME',
        help='write benchmarks/results/NAME.json (default: '
        'model_complexity for the whole table at the paper sizes)')
    parser.add_argument(
        '--doc',
        metavar='PAGE',
        help='refill the <!-- begin result: NAME.json#table --> block of '
        'this page')
    args = parser.parse_args(argv)
    if args.results is None and not (args.filter or args.size):
        args.results = 'model_complexity'
    if args.doc and not args.results:
        parser.error('--doc needs --results (the file the block quotes)')
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    path = osp.join(ROOT, args.csv) if not osp.isabs(args.csv) else args.csv
    if not osp.isfile(path):
        fail(f'--csv {args.csv!r}: file does not exist')
    try:
        configs = configs_of(paper_settings.load_table(path))
    except ValueError as exc:
        fail(str(exc))
    if args.filter:
        try:
            pattern = re.compile(args.filter)
        except re.error as exc:
            fail(f'--filter {args.filter!r}: not a regular expression '
                 f'({exc})')
        configs = {k: v for k, v in configs.items() if pattern.search(k)}
        if not configs:
            fail(f'--filter {args.filter!r} matches no config of {args.csv}')
    start = time.time()
    records, counted = measure(configs, args.size)
    table = markdown(records)
    print(table)
    print(f'{len(records)} configs, {counted} distinct networks counted in '
          f'{time.time() - start:.0f} s')
    if args.results:
        how = ('each config at its own test size: a 640 x 480 image resized '
               'to test_scale (longer side <= max_size), padded to the '
               'data preprocessor\'s pad_size_divisor' if args.size is None
               else f'every config at {args.size[0]} x {args.size[1]}')
        written = results_io.write_results(
            args.results,
            dict(
                csv=args.csv,
                input=how,
                counter='mmengine.analysis FlopAnalyzer (tensor-mode '
                'forward, 1 multiply-add = 1 FLOP, as mmdet get_flops.py) '
                'and parameter_count',
                paper_ms='Table 1e of the paper, Nvidia M40, per image',
                distinct_networks=counted,
                configs=records,
                table=table), sys.argv)
        print(f'results written to {written}')
        if args.doc:
            refill(args.doc, args.results)
            print(f'{args.doc}: table refilled')


if __name__ == '__main__':
    main()
