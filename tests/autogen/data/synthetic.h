/* Synthetic header exercising every construct the struct/constant generator translates. */
#ifndef SYNTHETIC_H
#define SYNTHETIC_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef signed char s8;
typedef int s32;

#define SYN_ANSWER 42
#define SYN_HEX_MASK 0xFFFF0000u
#define SYN_SHIFTED (1u << 31)
#define SYN_NEGATIVE (-5)
#define SYN_CHAR 'K'
#define SYN_STRING "synthetic"
#define SYN_EXPRESSION ((SYN_ANSWER * 3 + 1) % 7)
#define SYN_SIZE_OF_PACKED sizeof(struct syn_packed)
#define SYN_IOC_READ _SYN_IOR('S', 7, struct syn_packed)
#define SYN_TYPE_ALIAS unsigned int
#define SYN_EMPTY

#define _SYN_IOC(dir, type, nr, size) (((dir) << 30) | ((size) << 16) | ((type) << 8) | (nr))
#define _SYN_IOR(type, nr, T) _SYN_IOC(2u, (type), (nr), sizeof(T))

#define SYN_FIELD_GET(value, shift, width) (((value) >> (shift)) & ((1u << (width)) - 1))
#define SYN_SELECT(a, b) ((a) > (b) ? (a) - (b) : (b) - (a))
#define SYN_NOT(x) (!(x))
#define SYN_DIVIDE(a, b) ((a) / (b))
#define SYN_CAST(x) ((u8)(x) + (s8)(x))
#define SYN_STATEMENT(x) do { (void)(x); } while (0)
#define SYN_PASTE(a, b) a##b

enum syn_colour { SYN_RED = -2, SYN_GREEN = 0, SYN_BLUE = 7 };
enum { SYN_ANON_A = 100, SYN_ANON_B };

struct syn_inner {
	u16 low;
	u8 flag;
};

struct syn_bits {
	u32 a : 3;
	u32 b : 30;            /* crosses into the next 32-bit storage unit */
	s32 negative : 5;
	u8 byte_bits : 7;
	u64 wide : 40;
	enum syn_colour colour : 4;
	u16 tail;
};

union syn_union {
	u32 word;
	struct {
		u16 lo;
		u16 hi;
	};
	u8 bytes[4];
};

struct syn_nested {
	u8 tag;
	union {
		struct {
			u8 x;
			u32 y;
		};
		u64 raw;
	};
	struct syn_inner inner;
	struct syn_inner grid[2][3];
	u32 matrix[2][2][2];
	struct {
		u8 first;
		u16 second;
	} named;
	union syn_union unions[2];
	enum syn_colour colour;
	void *pointer;
	double real;
	float single;
	_Bool truth;
	s8 signed_byte;
};

struct syn_packed {
	u8 a;
	u32 b;
	u16 c;
	u64 d;
} __attribute__((packed));

#pragma pack(push, 2)
struct syn_pragma_packed {
	u8 a;
	u64 b;
	u8 bits : 3;
};
#pragma pack(pop)

struct syn_aligned {
	u8 a;
	u32 b __attribute__((aligned(16)));
};

struct syn_flex {
	u32 count;
	u16 entries[];
};

struct syn_zero_length {
	u64 header;
	u8 payload[0];
};

typedef struct {
	u32 in_typedef;
	u8 keyword_names[2];
} syn_typedef_t;

typedef struct syn_inner syn_inner_alias;

struct syn_reserved_names {
	u32 buffer;
	u32 from;
	u32 SIZE;
	u8 class;
	u8 lambda;
};

struct syn_forward;

#endif
