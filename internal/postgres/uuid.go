package postgres

import (
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// registerUUID teaches conn's type map to send a github.com/google/uuid.UUID (the Go type sqlc
// generates for uuid columns) as its 16 bytes. Without it pgx goes through uuid.UUID's
// driver.Valuer: a string per value, parsed back into bytes, which was a tenth of the worker's CPU
// on its batches of uuid arrays.
func registerUUID(conn *pgx.Conn) {
	tm := conn.TypeMap()
	t := &pgtype.Type{Name: "uuid", OID: pgtype.UUIDOID, Codec: uuidCodec{}}
	tm.RegisterType(t)
	tm.RegisterType(&pgtype.Type{Name: "_uuid", OID: pgtype.UUIDArrayOID, Codec: &pgtype.ArrayCodec{ElementType: t}})
}

// uuidCodec is pgx's UUIDCodec with a binary encode plan for uuid.UUID.
type uuidCodec struct{ pgtype.UUIDCodec }

func (c uuidCodec) PlanEncode(m *pgtype.Map, oid uint32, format int16, value any) pgtype.EncodePlan {
	if _, ok := value.(uuid.UUID); ok && format == pgtype.BinaryFormatCode {
		return encodeUUID{}
	}
	return c.UUIDCodec.PlanEncode(m, oid, format, value)
}

type encodeUUID struct{}

func (encodeUUID) Encode(value any, buf []byte) ([]byte, error) {
	u := value.(uuid.UUID) // cannot panic: PlanEncode chose this plan for a uuid.UUID
	return append(buf, u[:]...), nil
}

// registerSlices teaches conn's type map the slice types of the worker's batch statements
// (sqlc's []*string for nullable text, [][]byte for jsonb, []pgtype.Timestamptz, []uuid.UUID),
// so that pgx encodes their arrays through a typed plan instead of reflection (pgx has typed
// plans only for slices of basic types).
func registerSlices(conn *pgx.Conn) {
	tm := conn.TypeMap()
	tm.TryWrapEncodePlanFuncs = append([]pgtype.TryWrapEncodePlanFunc{trySlice}, tm.TryWrapEncodePlanFuncs...)
}

func trySlice(value any) (plan pgtype.WrappedEncodePlanNextSetter, nextValue any, ok bool) {
	switch value := value.(type) {
	case []*string:
		return &slicePlan[*string]{}, pgtype.FlatArray[*string](value), true
	case [][]byte:
		return &slicePlan[[]byte]{}, pgtype.FlatArray[[]byte](value), true
	case []pgtype.Timestamptz:
		return &slicePlan[pgtype.Timestamptz]{}, pgtype.FlatArray[pgtype.Timestamptz](value), true
	case []uuid.UUID:
		return &slicePlan[uuid.UUID]{}, pgtype.FlatArray[uuid.UUID](value), true
	}
	return nil, nil, false
}

// slicePlan encodes a []T as pgx's FlatArray[T], as pgx does for slices of basic types.
type slicePlan[T any] struct{ next pgtype.EncodePlan }

func (p *slicePlan[T]) SetNext(next pgtype.EncodePlan) { p.next = next }

func (p *slicePlan[T]) Encode(value any, buf []byte) ([]byte, error) {
	return p.next.Encode(pgtype.FlatArray[T](value.([]T)), buf) // cannot panic: trySlice chose this plan for a []T
}
