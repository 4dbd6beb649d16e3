// ESM entry of taskrush-plugin: the implementation is index.cjs.
import sdk from './index.cjs';

export const { Plugin, Host, HostError, Veto, RpcError, CommandResult, ErrorCode, PROTOCOL_VERSIONS, MAX_LINE_BYTES, httpRequest, HttpResponse } = sdk;
export default sdk;
