; memset: out[i] = value for i < n (u32 words), one word per thread.
; Calling convention (docs/qcom.md, Programs): out at c0.xy, n in c1.x, the value in c1.y;
; local invocation id in r0.x, work-group id in the shared register r48.x.
; footprint: max_reg=2 max_half_reg=-1 const_vec4s=2 local_memory=0 instructions=12
@localsize 64, 1, 1
@buf 4096 (c0.x)        ; out
@const(c1.x) 1024, 0, 0, 0
@invocationid(r0.x)
@wgid(r48.x)
mov.u32u32 r2.x, c0.x
mov.u32u32 r2.y, c0.y
mov.u32u32 r2.z, c1.y
shl.b r1.x, r48.x, 6
(rpt2)nop
add.u r1.x, r1.x, r0.x
(rpt2)nop
cmps.u.ge p0.x, r1.x, c1.x
(rpt5)nop
br p0.x, #done
stg.a.u32 g[r2.x+(r1.x)<<2], r2.z, 1
done:
end
