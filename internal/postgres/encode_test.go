package postgres

import (
	"testing"

	"github.com/jackc/pgx/v5/pgtype"
)

// BenchmarkEncodeSlices compares pgx's reflection plan for the worker's batch arrays with the typed
// plan registerSlices adds.
func BenchmarkEncodeSlices(b *testing.B) {
	strs := make([]*string, 256)
	for i := range strs {
		s := "some name here"
		strs[i] = &s
	}
	data := make([][]byte, 256)
	for i := range data {
		data[i] = []byte(`{"id":"user_1","first_name":"Ada","email_addresses":[]}`)
	}
	for _, typed := range []bool{false, true} {
		m := pgtype.NewMap()
		if typed {
			m.TryWrapEncodePlanFuncs = append([]pgtype.TryWrapEncodePlanFunc{trySlice}, m.TryWrapEncodePlanFuncs...)
		}
		name := "reflect"
		if typed {
			name = "typed"
		}
		b.Run(name, func(b *testing.B) {
			var buf []byte
			for b.Loop() {
				var err error
				if buf, err = m.Encode(pgtype.VarcharArrayOID, pgtype.BinaryFormatCode, strs, buf[:0]); err != nil {
					b.Fatal(err)
				}
				if buf, err = m.Encode(pgtype.JSONBArrayOID, pgtype.BinaryFormatCode, data, buf[:0]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
