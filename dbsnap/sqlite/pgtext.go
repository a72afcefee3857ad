package sqlite

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Exact text forms of PostgreSQL binary values, as PostgreSQL itself
// prints them (DateStyle ISO, IntervalStyle postgres), for a restore into
// SQLite, which has no PostgreSQL server to ask. Only the types here (and
// those fromPg handles directly) go to SQLite; any other is an error, so
// that nothing is re-encoded on the way.

var errShort = errors.New("binary value too short")

// numericText is numeric_out of a binary numeric.
func numericText(b []byte) (string, error) {
	if len(b) < 8 {
		return "", errShort
	}
	ndigits := int(binary.BigEndian.Uint16(b))
	weight := int(int16(binary.BigEndian.Uint16(b[2:])))
	sign := binary.BigEndian.Uint16(b[4:])
	dscale := int(binary.BigEndian.Uint16(b[6:]))
	if len(b) != 8+2*ndigits {
		return "", fmt.Errorf("numeric with %d digits in %d bytes", ndigits, len(b))
	}
	switch sign {
	case 0xC000:
		return "NaN", nil
	case 0xD000:
		return "Infinity", nil
	case 0xF000:
		return "-Infinity", nil
	}
	digit := func(i int) int {
		if i < 0 || i >= ndigits {
			return 0
		}
		return int(binary.BigEndian.Uint16(b[8+2*i:]))
	}
	var sb strings.Builder
	if sign == 0x4000 {
		sb.WriteByte('-')
	}
	if weight < 0 {
		sb.WriteByte('0')
	} else {
		for i := 0; i <= weight; i++ {
			if i == 0 {
				sb.WriteString(strconv.Itoa(digit(i)))
			} else {
				fmt.Fprintf(&sb, "%04d", digit(i))
			}
		}
	}
	if dscale > 0 {
		sb.WriteByte('.')
		var frac strings.Builder
		for i := weight + 1; frac.Len() < dscale; i++ {
			fmt.Fprintf(&frac, "%04d", digit(i))
		}
		sb.WriteString(frac.String()[:dscale])
	}
	return sb.String(), nil
}

// intervalText is interval_out with IntervalStyle postgres.
func intervalText(b []byte) (string, error) {
	if len(b) != 16 {
		return "", errShort
	}
	us := int64(binary.BigEndian.Uint64(b))
	days := int64(int32(binary.BigEndian.Uint32(b[8:])))
	months := int64(int32(binary.BigEndian.Uint32(b[12:])))
	var sb strings.Builder
	isZero, isBefore := true, false
	part := func(v int64, unit string) {
		if v == 0 {
			return
		}
		if !isZero {
			sb.WriteByte(' ')
		}
		if isBefore && v > 0 {
			sb.WriteByte('+')
		}
		fmt.Fprintf(&sb, "%d %s", v, unit)
		if v != 1 {
			sb.WriteByte('s')
		}
		isBefore, isZero = v < 0, false
	}
	part(months/12, "year")
	part(months%12, "mon")
	part(days, "day")
	hour, rest := us/3600e6, us%3600e6
	min, rest := rest/60e6, rest%60e6
	sec, fsec := rest/1e6, rest%1e6
	if isZero || hour != 0 || min != 0 || sec != 0 || fsec != 0 {
		minus := hour < 0 || min < 0 || sec < 0 || fsec < 0
		if !isZero {
			sb.WriteByte(' ')
		}
		if minus {
			sb.WriteByte('-')
		} else if isBefore {
			sb.WriteByte('+')
		}
		fmt.Fprintf(&sb, "%02d:%02d:%02d", abs(hour), abs(min), abs(sec))
		if fsec != 0 {
			sb.WriteString(strings.TrimRight(fmt.Sprintf(".%06d", abs(fsec)), "0"))
		}
	}
	return sb.String(), nil
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// inetText is inet_out / cidr_out.
func inetText(b []byte) (string, error) {
	if len(b) < 4 {
		return "", errShort
	}
	family, bits, isCidr, n := b[0], int(b[1]), b[2] != 0, int(b[3])
	if len(b) != 4+n {
		return "", errShort
	}
	var addr netip.Addr
	maxBits := 32
	switch {
	case family == 2 && n == 4: // PGSQL_AF_INET
		addr = netip.AddrFrom4([4]byte(b[4:8]))
	case family == 3 && n == 16: // PGSQL_AF_INET6
		addr, maxBits = netip.AddrFrom16([16]byte(b[4:20])), 128
	default:
		return "", fmt.Errorf("inet family %d with %d bytes", family, n)
	}
	s := addr.String()
	if isCidr || bits != maxBits {
		s += "/" + strconv.Itoa(bits)
	}
	return s, nil
}

// elemText gives the text form of an array element of type name, or
// ok=false for element types the arrays here do not cover.
func elemText(name string, b []byte) (string, bool, error) {
	switch name {
	case "int2":
		if len(b) != 2 {
			return "", true, errShort
		}
		return strconv.Itoa(int(int16(binary.BigEndian.Uint16(b)))), true, nil
	case "int4":
		if len(b) != 4 {
			return "", true, errShort
		}
		return strconv.Itoa(int(int32(binary.BigEndian.Uint32(b)))), true, nil
	case "int8":
		if len(b) != 8 {
			return "", true, errShort
		}
		return strconv.FormatInt(int64(binary.BigEndian.Uint64(b)), 10), true, nil
	case "text", "varchar", "bpchar", "name":
		return string(b), true, nil
	case "bool":
		if len(b) != 1 {
			return "", true, errShort
		}
		if b[0] != 0 {
			return "t", true, nil
		}
		return "f", true, nil
	case "numeric":
		s, err := numericText(b)
		return s, true, err
	case "uuid":
		if len(b) != 16 {
			return "", true, errShort
		}
		h := fmt.Sprintf("%x", b)
		return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], true, nil
	}
	return "", false, nil
}

// arrayText is array_out of a binary array whose element type is one
// elemText covers (elem is the element's type name).
func arrayText(elem string, b []byte) (string, bool, error) {
	if _, ok, _ := elemText(elem, nil); !ok {
		return "", false, nil
	}
	if len(b) < 12 {
		return "", true, errShort
	}
	ndim := int(binary.BigEndian.Uint32(b))
	if ndim == 0 {
		return "{}", true, nil
	}
	if ndim < 0 || ndim > 6 || len(b) < 12+8*ndim {
		return "", true, fmt.Errorf("array with %d dimensions", ndim)
	}
	dims := make([]int, ndim)
	var sb strings.Builder
	decorate := false
	for i := range ndim {
		dims[i] = int(int32(binary.BigEndian.Uint32(b[12+8*i:])))
		if int32(binary.BigEndian.Uint32(b[16+8*i:])) != 1 {
			decorate = true
		}
	}
	if decorate {
		for i := range ndim {
			lb := int(int32(binary.BigEndian.Uint32(b[16+8*i:])))
			fmt.Fprintf(&sb, "[%d:%d]", lb, lb+dims[i]-1)
		}
		sb.WriteByte('=')
	}
	p := b[12+8*ndim:]
	var walk func(d int) error
	walk = func(d int) error {
		sb.WriteByte('{')
		for i := range dims[d] {
			if i > 0 {
				sb.WriteByte(',')
			}
			if d+1 < ndim {
				if err := walk(d + 1); err != nil {
					return err
				}
				continue
			}
			if len(p) < 4 {
				return errShort
			}
			l := int(int32(binary.BigEndian.Uint32(p)))
			p = p[4:]
			if l < 0 {
				sb.WriteString("NULL")
				continue
			}
			if len(p) < l {
				return errShort
			}
			s, _, err := elemText(elem, p[:l])
			if err != nil {
				return err
			}
			p = p[l:]
			sb.WriteString(quoteElem(s))
		}
		sb.WriteByte('}')
		return nil
	}
	if err := walk(0); err != nil {
		return "", true, err
	}
	return sb.String(), true, nil
}

// quoteElem quotes an array element as array_out does.
func quoteElem(s string) string {
	need := s == "" || strings.EqualFold(s, "NULL")
	for _, c := range []byte(s) {
		switch c {
		case '{', '}', ',', '"', '\\', ' ', '\t', '\n', '\r', '\v', '\f':
			need = true
		}
	}
	if !need {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}
