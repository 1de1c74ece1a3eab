"""The input normalisations MobileNets are trained with, in [0, 1] pixel units, and the RGB -> luma weights.

One home for these numbers: the data transforms, the weight converters, exported models and int8 calibration all
read them from here.
"""

# torchvision's and timm's ImageNet models: per-channel statistics of ImageNet's training images.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Keras and TF-Slim MobileNets take inputs in [-1, 1]: x / 127.5 - 1 on 0..255 pixels.
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)
# ITU-R BT.601 luma, the weights PIL's convert("L") uses, so RGB -> 1 channel matches PIL on every path.
LUMA = (0.299, 0.587, 0.114)
