"""Generative anomaly detectors behind one contract (see ``anomalens.detectors.base``).

Score sign: higher = more anomalous (PyOD's convention, the reverse of scikit-learn's
``score_samples``).
"""

from anomalens.detectors.autoencoder import AutoEncoder
from anomalens.detectors.autoregressive import Autoregressive
from anomalens.detectors.base import Contributions, BaseDetector, Inspection
from anomalens.detectors._validation import check_int, check_matrix, check_positive_int, check_probability
from anomalens.detectors.calibration import Calibrator, benjamini_hochberg, conformal_pvalues
from anomalens.detectors.conv import ConvAutoEncoder
from anomalens.detectors.diffusion import Diffusion
from anomalens.detectors.ensemble import Ensemble
from anomalens.detectors.flow import NormalizingFlow
from anomalens.detectors.ganomaly import GANomaly
from anomalens.detectors.image_ae import ImageAutoEncoder
from anomalens.detectors.image_diffusion import ImageDiffusion
from anomalens.detectors.patch import PaDiM, PatchCore
from anomalens.detectors.pca import PCA
from anomalens.detectors.registry import DetectorInfo, get_detector_class, list_detectors, make_detector, register
from anomalens.detectors.vae import VAE

register("autoencoder", AutoEncoder, "reconstruction", ("tabular", "series", "logs"), "mean squared reconstruction error (robust-scaled units)")
register("vae", VAE, "reconstruction", ("tabular", "series", "logs"), "negative reconstruction log-likelihood averaged over latent samples")
register("diffusion", Diffusion, "reconstruction", ("tabular", "series", "logs"), "mean squared error of partial-diffusion denoising over noise levels (AnoDDPM)")
register("ganomaly", GANomaly, "reconstruction", ("tabular", "series", "logs"), "squared distance between the codes of the input and of its reconstruction")
register("flow", NormalizingFlow, "density", ("tabular", "series", "logs"), "negative log-likelihood -log p(x) under a masked autoregressive flow")
register("autoregressive", Autoregressive, "density", ("tabular", "series", "logs"), "negative log-likelihood -log p(x), MADE with Gaussian-mixture conditionals")
register("pca", PCA, "density", ("tabular", "series", "logs"),
         "squared Mahalanobis distance over the principal axes, per axis (a Gaussian; light-tailed on normal rows)")
register("ensemble", Ensemble, "ensemble", ("tabular", "logs", "images"), "Cauchy combination of the members' conformal p-values, re-calibrated")
register("conv_ae", ConvAutoEncoder, "reconstruction", ("series",),
         "mean squared reconstruction error per channel x time cell of a 1-D convolutional autoencoder over windows")

register("patchcore", PatchCore, "memory bank", ("images",),
         "largest distance of an image cell's pretrained descriptor (EfficientNet-Lite0) to its nearest normal patch")
register("padim", PaDiM, "density", ("images",),
         "largest Mahalanobis distance of an image cell's pretrained descriptor to a Gaussian of the normal cells at its position")
register("image_ae", ImageAutoEncoder, "reconstruction", ("images",),
         "mean normalised squared pixel error of a convolutional autoencoder's reconstruction (nearest of its training codes' decodings)")
register("image_diffusion", ImageDiffusion, "reconstruction", ("images",),
         "largest cell of the normalised squared pixel error of the image's partial-diffusion denoising (AnoDDPM, a pixel-space U-Net DDPM)")

load = BaseDetector.load

__all__ = [
    "Contributions",
    "Inspection",
    "AutoEncoder",
    "Autoregressive",
    "BaseDetector",
    "Calibrator",
    "ConvAutoEncoder",
    "DetectorInfo",
    "Diffusion",
    "Ensemble",
    "GANomaly",
    "ImageAutoEncoder",
    "ImageDiffusion",
    "NormalizingFlow",
    "PCA",
    "PaDiM",
    "PatchCore",
    "VAE",
    "benjamini_hochberg",
    "check_int",
    "check_matrix",
    "check_positive_int",
    "check_probability",
    "conformal_pvalues",
    "get_detector_class",
    "list_detectors",
    "load",
    "make_detector",
]
