"""The metadata saved beside every checkpoint, and compared on restore."""

from __future__ import annotations


def stage_meta(ctx, stage: str, **extra) -> dict:
  data = ctx.data
  h, w, c = data.image_shape
  meta = {
      "stage": stage,
      "class_names": list(data.class_names),
      "num_classes": len(data.class_names),
      "image_size": int(h),
      "channels": int(c),
      "model": ctx.config.model.to_dict(),
      "data_source": data.source,
      "data_fingerprint": data.fingerprint,
  }
  if data.label_map:
    meta["label_map"] = data.label_map  # raw names -> these class names, for later prediction
  meta.update(extra)
  return meta
