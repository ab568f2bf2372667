; vector_add: out[i] = a[i] + b[i] for i < n (f32), one element per thread.
; Calling convention (docs/qcom.md, Programs): buffer addresses in const vec4s (cN.xy, uploaded with
; CP_LOAD_STATE6), the element count in c3.x, the local invocation id in r0.x, the work-group id
; in the shared register r48.x (HLSQ_CS_CNTL_0 LOCALIDREGID / WGIDCONSTID).
; footprint: max_reg=4 max_half_reg=-1 const_vec4s=4 local_memory=0 instructions=19
@localsize 64, 1, 1
@buf 4096 (c0.x)        ; a
@buf 4096 (c1.x)        ; b
@buf 4096 (c2.x)        ; out
@const(c3.x) 1024, 0, 0, 0
@invocationid(r0.x)
@wgid(r48.x)
mov.u32u32 r2.x, c0.x
mov.u32u32 r2.y, c0.y
mov.u32u32 r2.z, c1.x
mov.u32u32 r2.w, c1.y
mov.u32u32 r3.x, c2.x
mov.u32u32 r3.y, c2.y
shl.b r1.x, r48.x, 6
(rpt2)nop
add.u r1.x, r1.x, r0.x
(rpt2)nop
cmps.u.ge p0.x, r1.x, c3.x
(rpt5)nop
br p0.x, #done
ldg.a.f32 r4.x, g[r2.x+(r1.x)<<2], 1
ldg.a.f32 r4.y, g[r2.z+(r1.x)<<2], 1
(sy)add.f r4.z, r4.x, r4.y
(rpt5)nop
stg.a.f32 g[r3.x+(r1.x)<<2], r4.z, 1
done:
end
