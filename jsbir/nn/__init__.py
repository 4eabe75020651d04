"""Network parts shared by the methods, as Flax Linen modules and pure functions.

``backbones`` (the registry of image encoders: ``compact_cnn``, ``efficientnet_lite0``, ``vgg16``, ``resnet50``),
``conv`` (fast depthwise and pointwise convolutions on CPU), ``efficientnet``, ``vgg``, ``resnet``, ``imagenet``
(their input conventions), ``gcn`` (jraph graph convolution over the class graph), ``grl`` (gradient reversal),
``attention`` (multi-head attention pooling over a feature map, DSSA's spatial attention), ``hashing`` (learned
binary codes), ``sketch_a_net`` and ``hed`` (the HED edge detector that turns photos into edge maps).
Networks never load weights: :mod:`jsbir.weights` writes pretrained values into their parameter trees.
"""
