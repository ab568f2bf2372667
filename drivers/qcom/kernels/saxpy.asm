; saxpy: y[i] = alpha * x[i] + y[i] for i < n (f32), one element per thread.
; Calling convention (docs/qcom.md, Programs): x at c0.xy, y at c1.xy, n in c2.x, alpha in c2.y;
; local invocation id in r0.x, work-group id in the shared register r48.x.
; footprint: max_reg=3 max_half_reg=-1 const_vec4s=3 local_memory=0 instructions=17
@localsize 64, 1, 1
@buf 4096 (c0.x)        ; x
@buf 4096 (c1.x)        ; y
@const(c2.x) 1024, 2.0, 0, 0
@invocationid(r0.x)
@wgid(r48.x)
mov.u32u32 r2.x, c0.x
mov.u32u32 r2.y, c0.y
mov.u32u32 r2.z, c1.x
mov.u32u32 r2.w, c1.y
shl.b r1.x, r48.x, 6
(rpt2)nop
add.u r1.x, r1.x, r0.x
(rpt2)nop
cmps.u.ge p0.x, r1.x, c2.x
(rpt5)nop
br p0.x, #done
ldg.a.f32 r3.x, g[r2.x+(r1.x)<<2], 1
ldg.a.f32 r3.y, g[r2.z+(r1.x)<<2], 1
(sy)mad.f32 r3.z, c2.y, r3.x, r3.y
(rpt5)nop
stg.a.f32 g[r2.z+(r1.x)<<2], r3.z, 1
done:
end
