// The region steps of quantize_v2, requantize and dequantize, calibrated or
// measuring the range at each forward, and the scaled copies they make.
#include <algorithm>

#include "region_builder.h"

namespace bnq {
namespace region {

void CompiledRegion::Builder::RangedCopy(const Node* node, int src,
                                         const dnnl::memory::desc& dst_md, bool run_time,
                                         RangeRule rule) {
  if (!run_time) {
    const Requantized r = rule(r_.ranges_);
    SetOutputs(node, ScaledCopy(node, src, dst_md, r.scale), r.min, r.max);
    return;
  }
  const int slot = NewRangeSlots();
  PrimitiveStep* step = nullptr;
  const int dst = ScaledCopy(node, src, dst_md, 1.f, &step);
  step->set_rescale([=](Ranges& ranges) {
    const Requantized r = rule(ranges);
    *step->ConstantFloats(DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC) = r.scale;
    ranges[slot] = r.min;
    ranges[slot + 1] = r.max;
  });
  SetOutputs(node, dst, Slot(slot), Slot(slot + 1));
}

// MXNet's quantize_v2 of float32 data: q = saturate(round(x * scale)),
// scale = (127.5 | 255.5) / max(|min|, |max|) of the calibrated range or
// (uncalibrated) of the data's own minimum and maximum, measured at each
// forward.  One reorder, into NHWC for 4-D data (what int8 convolutions read).
void CompiledRegion::Builder::Quantize(const Node* node, const QuantizeAttrs& a) {
  const int data = Data(node->inputs[0]);
  const Value in = r_.values_[data];
  if (in.md.get_data_type() != dt::f32) Fail(node, "regions quantize float32 data only");
  const QuantType type = a.uint8_output() ? QuantType::kUint8 : QuantType::kInt8;
  if (a.calibrated && !(std::max(std::fabs(a.min_calib), std::fabs(a.max_calib)) > 0.f)) {
    Fail(node, "the calibrated range is empty");
  }
  const dims d = in.md.get_dims();
  const dt out_type = type == QuantType::kUint8 ? dt::u8 : dt::s8;
  const dnnl::memory::desc out_md =
      d.size() == 4 ? dnnl::memory::desc(d, out_type, tag::nhwc) : PlainDesc(d, out_type);
  if (a.calibrated) {
    RangedCopy(node, data, out_md, false,
               [=](const Ranges&) { return QuantizeFloat(type, a.min_calib, a.max_calib); });
    return;
  }
  const int measured = MeasureRange(node, data);
  RangedCopy(node, data, out_md, true,
             [=](const Ranges& r) { return QuantizeFloat(type, r[measured], r[measured + 1]); });
}

// A step that writes the minimum and maximum of `value` (float32 or int32,
// strided) into two new range slots; returns the first.
int CompiledRegion::Builder::MeasureRange(const Node* node, int value) {
  const dnnl::memory::desc md = r_.values_[value].md;
  if (!IsStrided(md)) Fail(node, "measures the range of a blocked tensor");
  const int slot = NewRangeSlots();
  const int64_t elements = static_cast<int64_t>(md.get_size() / sizeof(float));
  r_.steps_.emplace_back(
      new MinMaxStep(node->name + "/measure", value, md.get_data_type(), elements, slot));
  return slot;
}

// MXNet's requantize of int32 data (requantize-inl.h): to the calibrated
// range, or to the range of the data's own extremes, measured at each forward.
void CompiledRegion::Builder::Requantize(const Node* node, const QuantizeAttrs& a) {
  const int raw = Data(node->inputs[0]);
  const Value in = r_.values_[raw];
  if (in.md.get_data_type() != dt::s32) Fail(node, "requantizes int32 data only");
  const int data = InLayout(node, raw, StridedOrPlain(in.md));
  const RangeEnd in_lo = End(node->inputs[1]), in_hi = End(node->inputs[2]);
  const QuantType type = a.uint8_output() ? QuantType::kUint8 : QuantType::kInt8;
  const dnnl::memory::desc out_md =
      WithType(r_.values_[data].md, type == QuantType::kUint8 ? dt::u8 : dt::s8);
  const int measured = a.calibrated ? -1 : MeasureRange(node, data);
  RangedCopy(node, data, out_md, measured >= 0 || AtRunTime({in_lo, in_hi}), [=](const Ranges& r) {
    return RequantizeInt32(type, in_lo.Get(r), in_hi.Get(r), a.calibrated, a.min_calib, a.max_calib,
                           measured >= 0 ? r[measured] : 0.f,
                           measured >= 0 ? r[measured + 1] : 0.f);
  });
}

// MXNet's dequantize: x = q * (max(|min|, |max|) / (127.5 | 255.5)), float32 NCHW.
void CompiledRegion::Builder::Dequantize(const Node* node) {
  const int data = Data(node->inputs[0]);
  const Value in = r_.values_[data];
  const RangeEnd lo = End(node->inputs[1]), hi = End(node->inputs[2]);
  const float levels = QuantizedRange(ToQuantType(in.md.get_data_type(), node));
  auto scale_of = [levels](float min, float max) {
    return std::max(std::fabs(min), std::fabs(max)) / levels;
  };
  const dnnl::memory::desc out_md = PlainDesc(in.md.get_dims(), dt::f32);
  if (!AtRunTime({lo, hi})) {
    values_[{node, 0}] = ScaledCopy(node, data, out_md, scale_of(lo.value, hi.value));
    return;
  }
  PrimitiveStep* step = nullptr;
  values_[{node, 0}] = ScaledCopy(node, data, out_md, 1.f, &step);
  step->set_rescale([=](Ranges& ranges) {
    *step->ConstantFloats(DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC) =
        scale_of(lo.Get(ranges), hi.Get(ranges));
  });
}

// A new value: saturate(round(fl(src * scale))) in layout and type `dst_md`,
// one reorder with a source scale (oneDNN rounds to nearest even).  `step`,
// if given, receives the reorder step (whose scale a rescale hook may set).
int CompiledRegion::Builder::ScaledCopy(const Node* node, int src, const dnnl::memory::desc& dst_md,
                                        float scale, PrimitiveStep** step) {
  const dnnl::memory::desc src_md = r_.values_[src].md;
  dnnl::primitive_attr attr;
  attr.set_scales_mask(DNNL_ARG_SRC, 0);
  dnnl::reorder::primitive_desc pd(r_.engine_, src_md, r_.engine_, dst_md, attr);
  const int dst = NewValue(dst_md);
  PrimitiveStep* s = AddStep(node, "/scale", dnnl::reorder(pd));
  s->Read(DNNL_ARG_FROM, src, src_md);
  s->Constant(DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC,
              Owned(r_.engine_, dnnl::memory::desc({1}, dt::f32, tag::a), &scale));
  s->Write(DNNL_ARG_TO, dst, dst_md);
  if (step != nullptr) *step = s;
  return dst;
}

}  // namespace region
}  // namespace bnq
