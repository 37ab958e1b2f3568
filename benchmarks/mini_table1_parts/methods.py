"""The methods of mini Table 1: each is a set of config overrides on the
regime's model (``Config.merge_from_dict`` keys) and the row of
``configs/paper_settings.csv`` that holds its paper AP. A new method is one
entry of :data:`METHODS` (and, to be judged, a claim in ``claims``)."""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

HEAD = 'model.bbox_head'
LOSS = f'{HEAD}.loss_cls'
SAMPLER = 'model.train_cfg.sampler'
ABL = 'configs/ablations/'


@dataclass(frozen=True)
class Method:
    """One row of the table.

    Args:
        description: What it is, for the tables.
        overrides: Dotted config keys and values.
        paper_config: The config of its paper cell
            (configs/paper_settings.csv).
        paper_table: Which of that config's rows (several tables share
            one config), None for the first.
        gamma: Its gamma in the gamma sweep (Table 1b), None if not in it.
    """
    description: str
    overrides: Dict[str, Any]
    paper_config: str
    paper_table: Optional[str] = None
    gamma: Optional[float] = None
    alpha: Optional[float] = field(default=None)


def fl(gamma: float, alpha: Optional[float]) -> Dict[str, Any]:
    """FocalFamilyLoss(gamma, alpha): FL, or alpha-balanced CE at gamma 0."""
    return {f'{LOSS}.gamma': gamma, f'{LOSS}.alpha': alpha}


def ohem(pos_fraction: Optional[float]) -> Dict[str, Any]:
    """CE (gamma 0, no alpha) scoring the examples of OneStageOHEMSampler,
    batch 128 per image, nms .5 (configs/ablations/table1d_ohem/)."""
    return {
        **fl(0.0, None), f'{SAMPLER}.type': 'OneStageOHEMSampler',
        f'{SAMPLER}.batch_size': 128,
        f'{SAMPLER}.nms_iou': 0.5,
        f'{SAMPLER}.pos_fraction': pos_fraction
    }


def _ce(alpha: float, cfg: str, table: str = 'Table 1a') -> Method:
    return Method(f'CE, prior .01, alpha {alpha:g}', fl(0.0, alpha),
                  f'{ABL}table1a_alpha_ce/retina_r50_fpn_600_1x_{cfg}.py',
                  table, None, alpha)


METHODS: Dict[str, Method] = {
    'ce_a025':
    _ce(0.25, 'ce-a025'),
    'ce_a05':
    _ce(0.5, 'ce-a05'),
    # Table 1b's gamma 0 row (alpha .75) is Table 1a's alpha .75 row
    'ce_a075':
    Method('CE, prior .01, alpha .75 (= FL gamma 0)', fl(0.0, 0.75),
           f'{ABL}table1a_alpha_ce/retina_r50_fpn_600_1x_ce-a075.py',
           'Table 1a', 0.0, 0.75),
    'fl_g05':
    Method('FL gamma .5, alpha .5', fl(0.5, 0.5),
           f'{ABL}table1b_gamma_alpha/retina_r50_fpn_600_1x_fl-g05-a05.py',
           'Table 1b', 0.5, 0.5),
    'fl_g1':
    Method('FL gamma 1, alpha .25', fl(1.0, 0.25),
           f'{ABL}table1b_gamma_alpha/retina_r50_fpn_600_1x_fl-g1-a025.py',
           'Table 1b', 1.0, 0.25),
    'fl_g2':
    Method('FL gamma 2, alpha .25 (the paper\'s default)', fl(2.0, 0.25),
           f'{ABL}retina_r50_fpn_600_1x.py', 'Table 1b', 2.0, 0.25),
    'fl_g5':
    Method('FL gamma 5, alpha .25', fl(5.0, 0.25),
           f'{ABL}table1b_gamma_alpha/retina_r50_fpn_600_1x_fl-g5-a025.py',
           'Table 1b', 5.0, 0.25),
    'flstar':
    Method('FL* gamma 2, beta 1, alpha .25', {
        **fl(2.0, 0.25), f'{LOSS}.star': True,
        f'{LOSS}.star_beta': 1.0
    }, f'{ABL}table3_fl_star/retina_r50_fpn_600_1x_flstar-g2-b1.py',
           'Table 3'),
    'ohem':
    Method('OHEM, batch 128, nms .5 (Table 1d\'s best)', ohem(None),
           f'{ABL}table1d_ohem/retina_r101_fpn_600_1x_ohem-b128-nms05.py'),
    'ohem13':
    Method('OHEM 1:3, batch 128, nms .5 (Table 1d\'s best 1:3)', ohem(0.25),
           f'{ABL}table1d_ohem/retina_r101_fpn_600_1x_ohem13-b128-nms05.py'),
    # DR keeps the rest of our head (IoU .5 / .4, box coder and loss, score
    # threshold), so only the classification loss and its prior differ
    'dr':
    Method(
        'DR loss (public code\'s settings), prior .5', {
            LOSS:
            dict(
                _delete_=True,
                type='DRLoss',
                use_sigmoid=True,
                grouping='per_batch'),
            f'{HEAD}.prior_prob':
            0.5
        }, 'configs/dr_loss/retina_r50_fpn_1x_dr.py'),
    # the prior's counterpart of ce_a05 (same alpha)
    'ce_noprior':
    Method('CE, alpha .5, no prior (bias 0)', {
        **fl(0.0, 0.5), f'{HEAD}.prior_prob': None
    }, f'{ABL}prior/retina_r50_fpn_600_1x_ce-noprior.py', 'Sec. 5.1'),
}
ALIASES = {'fl_g0': 'ce_a075'}
QUICK_METHODS = ('fl_g2', 'ohem', 'dr', 'ce_noprior')
# the divergence check: these two under the second optimizer, first
# iterations only
CURVE_METHODS = ('ce_noprior', 'ce_a05')


def resolve(names: List[str]) -> List[str]:
    """Aliases resolved, duplicates dropped, order kept."""
    return list(dict.fromkeys(ALIASES.get(n, n) for n in names))


def paper_rows() -> Dict[str, Dict[str, str]]:
    """{method: its row of configs/paper_settings.csv}."""
    from projects.focal_retina.utils.paper_settings import load_table
    rows: Dict[str, List[Dict[str, str]]] = {}
    for row in load_table():
        rows.setdefault(row['config'], []).append(row)
    out = {}
    for name, m in METHODS.items():
        cells = rows[m.paper_config]
        out[name] = next((c for c in cells if c['table'] == m.paper_table),
                         cells[0])
    return out


def paper_cell(row: Dict[str, str]) -> str:
    """``'34.0 (Table 1b, R-50)'`` or the row's note."""
    depth = f'R-{row["depth"]}'
    if not row['paper_ap']:
        return f'{row["note"]} ({row["table"]}, {depth})'
    return f'{row["paper_ap"]} ({row["table"]}, {depth})'
