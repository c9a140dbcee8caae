// The half-precision conversions that replace the kernels' inline PTX (cvt.f32.f16 and
// cvt.rn.f16.f32): exact widening, and round-to-nearest-even narrowing with PTX's canonical NaN.
// test_simt_runtime checks both bit for bit against NumPy over every half and the ties.
#include "simt.h"

namespace simt {

unsigned short cvt_rn_f16_f32(float f) {
    uint32_t u = (uint32_t)to_bits(f);
    const uint32_t sign = (u >> 16) & 0x8000u;
    u &= 0x7fffffffu;
    if (u > 0x7f800000u) return 0x7fffu;  // any NaN: the canonical NaN, as PTX cvt gives
    if (u >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);  // rounds to inf
    if (u < 0x38800000u) {  // below the smallest normal half: subnormal or zero
        if (u < 0x33000000u) return (unsigned short)sign;  // below half of the smallest subnormal
        const int e = (int)(u >> 23);
        const uint32_t m = (u & 0x7fffffu) | 0x800000u;
        const int shift = 126 - e;  // 14 + (113 - e) ... so that m >> shift is in subnormal units
        uint32_t h = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1u))) ++h;
        return (unsigned short)(sign | h);
    }
    uint32_t h = ((u >> 13) - (112u << 10));
    const uint32_t rem = u & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
    return (unsigned short)(sign | h);
}

float cvt_f32_f16(unsigned short h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    uint32_t u;
    if (e == 0x1f) {
        u = sign | 0x7f800000u | (m << 13);
    } else if (e) {
        u = sign | ((e + 112u) << 23) | (m << 13);
    } else if (m == 0) {
        u = sign;
    } else {
        int ee = 113;
        uint32_t mm = m;
        while (!(mm & 0x400u)) {
            mm <<= 1;
            --ee;
        }
        u = sign | ((uint32_t)ee << 23) | ((mm & 0x3ffu) << 13);
    }
    return from_bits<float>(u);
}

}  // namespace simt
