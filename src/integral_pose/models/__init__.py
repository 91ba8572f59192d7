"""Models: ResNet trunks (torchvision-compatible keys) and the integral pose network."""
from integral_pose.models.pose_net import MODEL_SPECS, DeconvHead, PoseNet, create_model, list_models, output_stride
from integral_pose.models.resnet import ResNet, load_torchvision_weights, resnet

__all__ = ["create_model", "list_models", "output_stride", "PoseNet", "DeconvHead", "ResNet", "resnet", "load_torchvision_weights", "MODEL_SPECS"]
