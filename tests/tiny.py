"""The one tiny profile the stage tests share: each experiment's smallest settings that still run every stage
(seconds of CPU each), on labelled synthetic stand-ins unless a test points ``data.root`` at offline files of its own.

``tiny_params("fc_depth", ...)`` is a fresh params dict (profile ``tiny``) holding the named experiments only; a test
changes what it needs in its own copy."""

import json

WRN_EVAL_POINTS, WRN_TRIANGLE_RESOLUTION = 5, 4  # t = k/4 on the curves, s = k/4 on the triangles' sides: one grid
RESNET_MINIMA, RESNET_POINTS = 2, 3  # minima per LR type, points per path

_STUDY = {"minima": {"n_minima": 3, "max_epochs": 1, "batch_size": 32, "train_subset": 64, "test_subset": 32,
                     "optimizer": "sgd", "schedule": "garipov", "lr_max": 0.03, "lr_base": 3.0e-4, "patience": None},
          "curves": {"epochs": 1, "batch_size": 32, "train_subset": 64, "n_eval": WRN_EVAL_POINTS, "triangle_epochs": 1,
                     "triangle_resolution": WRN_TRIANGLE_RESOLUTION,
                     "triangle_regimes": ["vertices_fixed", "sides_fixed"]}}
_RESNET_SET = {
    "type1": {"n_minima": RESNET_MINIMA, "seed": 0, "optimizer": "sgd", "schedule": "piecewise", "lr_max": 1e-3,
              "lr_base": 1e-3, "max_epochs": 2, "patience": None, "batch_size": 16, "train_subset": 32,
              "test_subset": 16},
    "type2": {"n_minima": RESNET_MINIMA, "seed": 100, "optimizer": "sgd", "schedule": "piecewise", "lr_max": 2e-2,
              "lr_base": 1e-3, "m1": 1, "m2": 2, "max_epochs": 2, "patience": None, "batch_size": 16,
              "train_subset": 32, "test_subset": 16},
    "paths": {"n_points": RESNET_POINTS, "batch_size": None, "weight_decay": 1e-5, "momentum": 0.0, "clip_norm": None,
              "schedule": "piecewise", "lr": 2e-3, "lr_min": 1.25e-4, "m1": 2, "m2": 3, "epochs": 3,
              "refine_every_epochs": 2, "train_subset": 16, "max_models": 64},
}
_CNN = {"minima": {"n_minima": 3, "max_epochs": 2, "batch_size": 32},
        "paths": {"n_points": 3, "steps": 2, "train_subset": 32}}

EXPERIMENTS = {
    "fc_depth": {"datasets": ["svhn"], "depths": [1, 2], "width": 8,
                 "minima": {"n_minima": 3, "max_epochs": 2, "train_subset": 256, "test_subset": 64, "batch_size": 64},
                 "paths": {"n_points": 5, "steps": 5, "train_subset": 128}},
    "cnn_channels": {"datasets": ["cifar10"], "models": ["cnn-1-4", "cnn-1-8", "cnn-2-4", "cnn-3-4"], **_CNN},
    "cnn_bn": {"datasets": ["cifar10"], "models": ["cnn-1-4-bn", "cnn-2-4-bn", "cnn-3-4-bn"], **_CNN},
    "resnet_lr": {"datasets": ["cifar10", "svhn"], "model": "resnet-t11-code", "cifar10": _RESNET_SET,
                  "svhn": _RESNET_SET},
    "wrn_robustness": {
        "wrn": {"dataset": "cifar100", "model": "wrn-10-1", **_STUDY},
        # lenet: 4 minima (two subset sizes below the full set); wrn: augmented minima, so its curves augment too
        "lenet": {"dataset": "fashion_mnist", "model": "lenet",
                  **{**_STUDY, "minima": {**_STUDY["minima"], "n_minima": 4}}},
        "subset_sizes": [2, 3, 4, 5],
        "fixed_minimum": 3,
    },
    "permutation_barrier": {
        "toy": {"n_inputs": 200, "hidden": 4, "n_steps": 6, "final_ratio": 1.0e-3, "seed": 1},
        "mnist": {"widths": [4, 6], "n_seeds": 2, "epochs": 1, "batch_size": 64, "train_subset": 512,
                  "path_subset": 128, "n_steps": 5, "final_ratio": 1.0e-3, "refine_budget": 8, "max_refinements": 2},
        "convergence": {"max_iter": 8, "rel_tol": 1.0e-6, "abs_tol": 1.0e-12},
    },
}
EXPERIMENTS["wrn_robustness"]["wrn"]["minima"] = {**_STUDY["minima"], "augment": True}


def tiny_params(*experiments: str) -> dict:
    raw = {"profile": "tiny", "data": {"root": None, "allow_synthetic": True, "allow_partial": True},
           "runtime": {"device": "cpu", "progress": False}, "profiles": {"tiny": {}}}
    return raw | {name: json.loads(json.dumps(EXPERIMENTS[name])) for name in experiments}  # no shared parts
