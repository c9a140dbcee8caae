// Launch glue for a kernel module, included after the kernel source by the wrapper simt_build.py
// generates: describes each kernel's C parameters for the stand-in's argument check and unpacks a
// void** argument array (CuPy's convention) into a typed call.
#pragma once

#include <stddef.h>

#include <type_traits>
#include <utility>

namespace simt {

struct ArgDesc {
    char kind;   // 'p' pointer, 'f' float, 'i' signed int, 'u' unsigned, 'h' half_t, 'b' bf16_t
    int size;    // sizeof the parameter
    char pkind;  // pointee kind ('v' for void), 0 for a scalar
    int psize;   // sizeof the pointee, 0 for void or a scalar
};

// Specialised by the wrapper for the kernel source's half storage types.
template <typename T> struct TypeCode {
    static constexpr char kind = std::is_floating_point<T>::value ? 'f'
                                 : std::is_integral<T>::value
                                     ? (std::is_signed<T>::value ? 'i' : 'u')
                                     : '?';
};

template <typename T> ArgDesc describe_one() {
    if constexpr (std::is_pointer<T>::value) {
        typedef typename std::remove_cv<typename std::remove_pointer<T>::type>::type P;
        if constexpr (std::is_void<P>::value) {
            return ArgDesc{'p', (int)sizeof(T), 'v', 0};
        } else {
            return ArgDesc{'p', (int)sizeof(T), TypeCode<P>::kind, (int)sizeof(P)};
        }
    } else {
        return ArgDesc{TypeCode<T>::kind, (int)sizeof(T), 0, 0};
    }
}

template <typename F> struct Sig;
template <typename... A> struct Sig<void (*)(A...)> {
    static constexpr int nargs = sizeof...(A);
    static void describe(ArgDesc* out) {
        int i = 0;
        ((out[i++] = describe_one<A>()), ...);
        (void)i;
        (void)out;
    }
    template <void (*F)(A...), size_t... I>
    static void call(void** a, std::index_sequence<I...>) {
        F(*static_cast<A*>(a[I])...);
        (void)a;
    }
};

template <auto F> void thunk(void** a) {
    typedef Sig<decltype(F)> S;
    S::template call<F>(a, std::make_index_sequence<S::nargs>{});
}

struct KernelEntry {
    const char* name;
    void (*entry)(void**);
    int max_threads;  // __launch_bounds__' first argument, 1024 without one
    int nargs;
    void (*describe)(ArgDesc*);
};

}  // namespace simt
