import numpy as np
import torch

from medvlp.knowledge.ums import build_record
from medvlp.methods.ums_classifier import STATE_CLASSES, UMSClassifierMethod, state_matrix
from medvlp.models import create_model


def test_state_matrix_and_loss_matches_per_field_reference():
    recs = [build_record({"a": "present", "b": None}, modality="CXR", source="t"),
            build_record({"a": "absent", "b": "uncertain"}, modality="CXR", source="t")]
    states = state_matrix(recs, ["a", "b", "c"])
    assert states.tolist() == [[3, 0, 0], [1, 2, 0]] and STATE_CLASSES[3] == "present"
    torch.manual_seed(0)
    m = UMSClassifierMethod(create_model("vit_tiny_p4_28"), ["a", "b", "c"]).eval()
    x = torch.randn(2, 1, 28, 28)
    out = m({"image": x, "states": states})
    logits = m.logits(x)
    ref = np.mean([torch.nn.functional.cross_entropy(logits[i, f][None], states[i, f][None]).item()
                   for i in range(2) for f in range(3)])
    assert abs(out["loss"].item() - ref) < 1e-5
    m.ignore_null = True
    ref_nn = np.mean([torch.nn.functional.cross_entropy(logits[i, f][None], states[i, f][None]).item()
                      for i in range(2) for f in range(3) if states[i, f] != 0])
    assert abs(m({"image": x, "states": states})["loss"].item() - ref_nn) < 1e-5
    m({"image": x, "states": states})["loss"].backward()
    assert m.backbone.model.patch_embed.proj.weight.grad.abs().sum() > 0


def test_build_through_registry_on_nih_like_set():
    from medvlp.data.imageset import ImageSet
    from medvlp.data.nih import NIH_LABELS
    from medvlp.data.transforms import Preprocess
    from medvlp.methods.registry import BuildContext, get_method_builder

    labels = np.zeros((3, 14), np.float32)
    labels[1, NIH_LABELS.index("Effusion")] = 1
    ds = ImageSet(name="nih1000", images=np.zeros((3, 28, 28), np.uint8), labels=labels, task="multilabel",
                  label_names=list(NIH_LABELS), split=np.array(["train"] * 3))
    bb = create_model("vit_tiny_p4_28")
    built = get_method_builder("ums_classifier")(BuildContext(bb, ds, Preprocess.from_dict(bb.preprocess), {}))
    item = built.dataset[1]
    fields = built.method.fields
    assert item["states"][fields.index("pleural_effusion")] == 3 and item["states"][fields.index("no_finding")] == 1
    assert built.method({k: torch.stack([built.dataset[i][k] for i in range(3)]) for k in ("image", "states")})["loss"] > 0
