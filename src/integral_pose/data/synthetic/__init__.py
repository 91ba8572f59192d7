"""SyntheticHumans: procedurally posed 3D humans rendered through a pinhole camera.

Every item is a person on the Human3.6M-17 skeleton with exact labels: the 2D joints are the
pinhole projections of the 3D joints (``u = f * X / Z + c`` with pixel centres at integers, the
same convention the rasteriser uses), so a network trained on them can be checked to sub-pixel
accuracy. The renderer is pure numpy, in four parts:

- :mod:`.kinematics`: the rest skeleton, joint-angle pose sampling and the pinhole projection;
- :mod:`.rasteriser`: body parts as tapered capsules and spheres, rasterised analytically inside
  their bounding boxes, shaded by their surface normals and merged through a z-buffer (so
  self-occlusion follows depth per pixel);
- :mod:`.backgrounds`: a random smooth colour field with a random texture and clutter;
- :mod:`.dataset`: :class:`SyntheticHumans`, which picks a pose and a camera per item and
  assembles image and labels.

Items are deterministic by ``(seed, index)``: item i is the same whatever worker renders it and in
whatever order.

Example:
    >>> ds = SyntheticHumans(4, image_size=64, seed=0)
    >>> item = ds[0]
    >>> item["image"].shape, item["joints_2d"].shape, item["joints_3d"].shape
    (torch.Size([3, 64, 64]), torch.Size([17, 2]), torch.Size([17, 3]))
"""
from integral_pose.data.synthetic.backgrounds import random_background
from integral_pose.data.synthetic.dataset import SyntheticHumans
from integral_pose.data.synthetic.kinematics import project, sample_pose
from integral_pose.data.synthetic.rasteriser import body_primitives, render_person

__all__ = ["SyntheticHumans", "render_person", "sample_pose", "project", "body_primitives", "random_background"]
