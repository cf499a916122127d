"""The paper's published numbers (Baumhauer et al., tables 1-10), to print beside ours.

Keys: ("unlearned" | "remaining", row) -> (NN, RF, AB) for advantage tables; row names use our
method labels ("normalization@10" = normalization with s = 10 per class). Note: the paper's
appendix swaps the captions of Tables 7 and 8; we use the content (7 = advantage, 8 = accuracy).
"""
from __future__ import annotations

NAIVE, NORM, RAND, ZERO = "naive", "normalization", "randomization", "zeroing"

# MNIST MLP, Tables 1 and 7.
MNIST_ADVANTAGE = {
    ("unlearned", NAIVE): (0.593, 0.609, 0.641),
    ("unlearned", NORM): (0.327, 0.362, 0.438),
    ("unlearned", RAND): (0.910, 0.869, 0.902),
    ("unlearned", ZERO): (0.919, 0.886, 0.909),
    ("remaining", NAIVE): (0.048, 0.090, 0.098),
    ("remaining", NORM): (0.041, 0.089, 0.095),
    ("remaining", RAND): (0.116, 0.132, 0.133),
    ("remaining", ZERO): (0.119, 0.129, 0.132),
}

# MNIST MLP, Table 8: accuracy (percent) and loss, mean and std over models.
MNIST_ACCURACY = {
    "before": (97.1, 0.19, 0.10, 0.01),
    "retrained": (97.1, 0.18, 0.09, 0.01),
    NAIVE: (97.1, 0.20, 0.10, 0.01),
    NORM: (97.1, 0.20, 0.10, 0.01),
    RAND: (96.7, 0.33, 0.11, 0.01),
    ZERO: (96.7, 0.30, 0.11, 0.01),
}

# AT&T ResNet, Table 3 (4 unlearned, 36 remaining classes).
ATT_ADVANTAGE = {
    ("unlearned", NAIVE): (0.467, 0.573, 0.574),
    ("unlearned", NORM): (0.381, 0.454, 0.462),
    ("remaining", NAIVE): (0.149, 0.266, 0.245),
    ("remaining", NORM): (0.152, 0.263, 0.246),
}

# CIFAR-10 CNN, Table 9 (Tables 2, 4, 5 are its parts), keyed by p.
CIFAR_ADVANTAGE = {
    64: {
        ("unlearned", NAIVE): (0.290, 0.331, 0.380),
        ("unlearned", NORM + "@10"): (0.113, 0.135, 0.137),
        ("unlearned", NORM + "@100"): (0.089, 0.105, 0.129),
        ("unlearned", NORM): (0.086, 0.106, 0.119),
        ("unlearned", RAND): (0.547, 0.487, 0.528),
        ("unlearned", ZERO): (0.599, 0.534, 0.560),
        ("remaining", NAIVE): (0.040, 0.043, 0.044),
        ("remaining", NORM + "@10"): (0.072, 0.075, 0.080),
        ("remaining", NORM + "@100"): (0.047, 0.044, 0.047),
        ("remaining", NORM): (0.044, 0.040, 0.045),
        ("remaining", RAND): (0.240, 0.203, 0.174),
        ("remaining", ZERO): (0.246, 0.204, 0.163),
    },
    256: {
        ("unlearned", NAIVE): (0.609, 0.457, 0.590),
        ("unlearned", NORM + "@10"): (0.193, 0.114, 0.122),
        ("unlearned", NORM + "@100"): (0.156, 0.095, 0.111),
        ("unlearned", NORM): (0.146, 0.110, 0.093),
        ("unlearned", RAND): (0.634, 0.579, 0.582),
        ("unlearned", ZERO): (0.642, 0.566, 0.575),
        ("remaining", NAIVE): (0.115, 0.080, 0.109),
        ("remaining", NORM + "@10"): (0.205, 0.142, 0.171),
        ("remaining", NORM + "@100"): (0.169, 0.108, 0.136),
        ("remaining", NORM): (0.148, 0.097, 0.118),
        ("remaining", RAND): (0.416, 0.279, 0.230),
        ("remaining", ZERO): (0.421, 0.276, 0.219),
    },
    1024: {
        ("unlearned", NAIVE): (0.627, 0.485, 0.603),
        ("unlearned", NORM + "@10"): (0.230, 0.164, 0.179),
        ("unlearned", NORM + "@100"): (0.216, 0.157, 0.172),
        ("unlearned", NORM): (0.174, 0.138, 0.138),
        ("unlearned", RAND): (0.741, 0.637, 0.682),
        ("unlearned", ZERO): (0.746, 0.642, 0.680),
        ("remaining", NAIVE): (0.129, 0.090, 0.115),
        ("remaining", NORM + "@10"): (0.242, 0.149, 0.182),
        ("remaining", NORM + "@100"): (0.217, 0.128, 0.146),
        ("remaining", NORM): (0.174, 0.097, 0.118),
        ("remaining", RAND): (0.506, 0.309, 0.249),
        ("remaining", ZERO): (0.508, 0.310, 0.251),
    },
}

# CIFAR-10 CNN, Table 5: the naive and normalization rows of Table 9 printed again by p, except
# that three cells differ from Table 9's (p = 64 naive unlearned RF 0.321, Table 9: 0.331;
# p = 1024 normalization remaining RF / AB 0.104 / 0.129, Table 9: 0.097 / 0.118). Table 5 is
# shown beside its own numbers.
CIFAR_TABLE5 = {
    p: {key: value for key, value in rows.items() if key[1] in (NAIVE, NORM)}
    for p, rows in CIFAR_ADVANTAGE.items()
}
CIFAR_TABLE5[64][("unlearned", NAIVE)] = (0.290, 0.321, 0.380)
CIFAR_TABLE5[1024][("remaining", NORM)] = (0.174, 0.104, 0.129)

# CIFAR-10 CNN, Table 10: accuracy (percent) and loss, mean and std, keyed by p.
CIFAR_ACCURACY = {
    64: {"before": (65.1, 1.01, 1.01, 0.03), "retrained": (66.0, 1.06, 0.96, 0.03),
         NAIVE: (66.4, 1.04, 0.95, 0.03), NORM + "@10": (66.4, 1.04, 0.95, 0.03),
         NORM + "@100": (66.4, 1.04, 0.95, 0.03), NORM: (66.4, 1.04, 0.95, 0.03),
         RAND: (61.1, 2.08, 1.17, 0.10), ZERO: (62.3, 1.76, 1.12, 0.09)},
    256: {"before": (68.1, 0.85, 0.93, 0.02), "retrained": (69.2, 0.80, 0.89, 0.02),
          NAIVE: (69.2, 0.83, 0.88, 0.02), NORM + "@10": (69.2, 0.83, 0.88, 0.02),
          NORM + "@100": (69.2, 0.83, 0.88, 0.02), NORM: (69.2, 0.83, 0.88, 0.02),
          RAND: (64.9, 1.76, 1.07, 0.08), ZERO: (65.7, 1.40, 1.03, 0.06)},
    1024: {"before": (69.7, 0.81, 0.93, 0.03), "retrained": (70.5, 0.82, 0.88, 0.03),
           NAIVE: (70.7, 0.82, 0.88, 0.03), NORM + "@10": (70.7, 0.82, 0.88, 0.03),
           NORM + "@100": (70.7, 0.82, 0.88, 0.03), NORM: (70.7, 0.82, 0.88, 0.03),
           RAND: (67.1, 1.55, 1.06, 0.08), ZERO: (67.6, 1.16, 1.03, 0.05)},
}

# CIFAR-10 CNN p = 256, Table 6: labels changed vs naive (percent: all, unlearned, correct) and accuracy.
CIFAR_LABELS_CHANGED = {
    NORM: (0.0, 0.0, 0.0, 69.2),
    RAND: (20.1, 48.8, 11.8, 64.8),
    ZERO: (18.3, 45.4, 10.3, 65.7),
}
