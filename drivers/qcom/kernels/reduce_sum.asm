; reduce_sum: out[w] = sum of in[64 * w + k] for k < 64 (u32), one work group per 64 inputs.
; Each thread stores its element to local memory at l[4 * lid], the group meets at a barrier, and
; thread 0 adds the 64 words in a loop and writes the group's sum to out[wgid].
; Calling convention (docs/qcom.md, Programs): in at c0.xy, out at c1.xy; local invocation id in
; r0.x, work-group id in the shared register r48.x; 256 bytes of local memory.
; footprint: max_reg=3 max_half_reg=-1 const_vec4s=2 local_memory=256 instructions=27
@localsize 64, 1, 1
@buf 4096 (c0.x)        ; in
@buf 64 (c1.x)          ; out
@localmem 256
@invocationid(r0.x)
@wgid(r48.x)
mov.u32u32 r2.x, c0.x
mov.u32u32 r2.y, c0.y
mov.u32u32 r2.z, c1.x
mov.u32u32 r2.w, c1.y
shl.b r1.x, r48.x, 6
(rpt2)nop
add.u r1.x, r1.x, r0.x
shl.b r1.y, r0.x, 2
(rpt4)nop
ldg.a.u32 r3.x, g[r2.x+(r1.x)<<2], 1
(sy)stl.u32 l[r1.y], r3.x, 1
(sy)(ss)bar
cmps.u.ne p0.x, r0.x, 0
(rpt5)nop
br p0.x, #done
mov.u32u32 r3.y, 0
mov.u32u32 r3.z, 0
(rpt5)nop
loop:
ldl.u32 r3.w, l[r3.z], 1
(ss)add.u r3.y, r3.y, r3.w
add.u r3.z, r3.z, 4
(rpt2)nop
cmps.u.lt p0.x, r3.z, 256
(rpt5)nop
br p0.x, #loop
stg.a.u32 g[r2.z+(r48.x)<<2], r3.y, 1
done:
end
