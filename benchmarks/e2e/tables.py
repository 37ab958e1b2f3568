"""The Markdown tables of the end-to-end benchmark's report."""
import os
import platform
import time
from typing import Dict, List

import torch

from benchmarks.machine import cpu_model
from .models import MODEL_NAMES, PHASES
from .phases import PROFILE_ORDER

TARGETS = dict(train=0.70, infer=0.90)  # ours / stock, fp32 (issue 14)


def machine_info(device: str) -> Dict:
    cpu = cpu_model()
    if cpu == 'unknown CPU':
        cpu = platform.processor() or cpu
    info = dict(
        torch=torch.__version__,
        device=device,
        cpu=cpu,
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        dtype='float32 (bf16 rows: bfloat16 autocast)',
        date=time.strftime('%Y-%m-%d %H:%M %Z'),
        # other jobs on the machine move the times; say how loaded it was
        load_average_start=list(os.getloadavg()))
    if device == 'cuda':
        info['gpu'] = torch.cuda.get_device_name()
    return info


def speed_table(res: Dict, images: int) -> List[str]:
    lines = [
        f'### Speed ({images} images per step; inference per image; ms, '
        'medians; pair = ours / stock of one interleaved round)', '',
        '| size | option | phase | stock ms | ours ms | ours / stock '
        '(median pair) | pair ratios | fastest ours / fastest stock | '
        'ours / stock fp32 |', '|---|---|---|---|---|---|---|---|---|'
    ]
    for size, by_opt in res.items():
        for option, r in by_opt.items():
            for phase in PHASES:
                s = r[phase]
                if 'error' in s:
                    lines.append(f'| {size} | {option} | {phase} | n/a | n/a'
                                 f' | n/a | n/a: {s["error"]} | n/a | n/a |')
                    continue
                ref = by_opt['fp32'][phase]
                vs = ('n/a' if 'error' in ref else
                      f'{s["ours_median_ms"] / ref["stock_median_ms"]:.3f}')
                pairs = ' '.join(f'{p:.3f}' for p in s['pair_ratios'])
                lines.append(
                    f'| {size} | {option} | {phase} | '
                    f'{s["stock_median_ms"]:.1f} | {s["ours_median_ms"]:.1f}'
                    f' | {s["median_pair_ratio"]:.3f} | {pairs} | '
                    f'{s["fastest_ratio"]:.3f} | {vs} |')
    for size, by_opt in res.items():
        first = (by_opt.get('compile') or {}).get('first_call_s')
        if first:  # the compile time is paid by the first step
            cells = ', '.join(f'{m} {p} {first[m][p]:.1f}' for m in MODEL_NAMES
                              for p in first.get(m, {}))
            lines += [
                '', f'{size} compile: first step of each phase, compiling '
                f'included (s; ours reuses the graphs stock compiled in the '
                f'same process where they are equal): {cells}'
            ]
    return lines


def flops_table(flops: Dict, res: Dict, images: int) -> List[str]:
    lines = [
        '### FLOPs and throughput (GFLOP = 2 x GMAC; train step counted as '
        '3 forwards)', '',
        '| size | GMAC / image (stock, ours) | 3x3 conv GFLOP/s fp32 | '
        'bf16 | forward at conv rate, s / image | infer GFLOP/s stock, '
        'ours | train GFLOP/s stock, ours |', '|---|---|---|---|---|---|---|'
    ]
    for size, f in flops.items():
        fp32 = res.get(size, {}).get('fp32', {})
        gflop = 2 * f['macs_stock'] / 1e9  # per image forward
        cells = []
        for phase, mult in (('infer', 1), ('train', 3 * images)):
            if 'error' in fp32.get(phase, dict(error=None)):
                cells.append('n/a')
                continue
            r = fp32[phase]
            cells.append(', '.join(f'{mult * gflop / (r[k] / 1e3):.0f}'
                                   for k in ('stock_median_ms',
                                             'ours_median_ms')))
        bf16 = f.get('conv_gflops_bf16')
        lines.append(
            f'| {size} | {f["macs_stock"] / 1e9:.1f}, '
            f'{f["macs_ours"] / 1e9:.1f} | {f["conv_gflops_fp32"]:.0f} | '
            f'{"n/a" if bf16 is None else f"{bf16:.0f}"} | '
            f'{gflop / f["conv_gflops_fp32"]:.2f} | {cells[0]} | '
            f'{cells[1]} |')
    return lines


def memory_table(mem: Dict) -> List[str]:
    lines = [
        '### Peak memory, fp32 (MiB above the built model and input; '
        'train: 2 steps, infer: 1 batch; a fresh process each)', '',
        '| size | phase | stock MiB | ours MiB | ours / stock |',
        '|---|---|---|---|---|'
    ]
    for size, by_phase in mem.items():
        for phase, r in by_phase.items():
            s, o = r['stock'], r['ours']
            if 'error' in s or 'error' in o:
                why = s.get('error') or o.get('error')
                lines.append(f'| {size} | {phase} | n/a | n/a | {why} |')
                continue
            lines.append(f'| {size} | {phase} | {s["peak_mib"]:.0f} | '
                         f'{o["peak_mib"]:.0f} | '
                         f'{o["peak_mib"] / s["peak_mib"]:.3f} |')
    return lines


def target_rows(res: Dict) -> List[Dict]:
    rows = []
    for size, by_opt in res.items():
        fp32 = by_opt.get('fp32')
        if not fp32:
            continue
        for phase, target in TARGETS.items():
            if 'error' in fp32[phase]:
                continue
            ratio = fp32[phase]['median_pair_ratio']
            rows.append(
                dict(
                    size=size,
                    phase=phase,
                    target=target,
                    measured=ratio,
                    met=bool(ratio <= target)))
    return rows


def target_table(rows: List[Dict]) -> List[str]:
    lines = [
        '### Targets (fp32, median pair ratio ours / stock)', '',
        '| size | target | measured | met |', '|---|---|---|---|'
    ]
    names = dict(train='train step', infer='inference per image')
    for r in rows:
        lines.append(f'| {r["size"]} | {names[r["phase"]]} <= '
                     f'{r["target"]:.2f} | {r["measured"]:.3f} | '
                     f'{"yes" if r["met"] else "no"} |')
    return lines


def profile_table(size: str, images: int, prof: Dict) -> List[str]:
    lines = [
        f'### Profile, {images} x {size}, fp32: one step of each, after the '
        'timed rounds (ms; ". " rows are inside the row above)', '',
        '| phase | part | stock ms | ours ms | ours share of total |',
        '|---|---|---|---|---|'
    ]
    for phase, order in PROFILE_ORDER.items():
        total = prof['ours'][phase]['total']
        for key in order:
            s = prof['stock'][phase].get(key, 0.0)
            o = prof['ours'][phase].get(key, 0.0)
            name = key.replace('  ', '. ', 1) if key.startswith('  ') \
                else key
            lines.append(f'| {phase} | {name} | {s:.1f} | {o:.1f} | '
                         f'{o / total:.1%} |')
    return lines
